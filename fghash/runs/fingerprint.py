"""Which data set a run was trained on, so that encoding refuses any other.

``fghash train`` writes ``RUN/data.json``: the data set's name, class count, and per
split the number of items and a SHA-256 over its ``path<TAB>label`` lines (paths relative
to the data set root, so moving the folder changes nothing). ``fghash encode`` computes
the same for the folder it is given and refuses a mismatch: the learned database codes B
of a run are rows of *its* training list, and pairing them with another list's labels
gives a codes file that looks fine and is wrong. Runs written before ``data.json``
existed are checked against what they do record: the number of training items that
have learned codes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from fghash.errors import FghashError
from fghash.runs.folder import DATA_FILE

__all__ = [
    "DATA_FILE",
    "fingerprint",
    "write_fingerprint",
    "record_training_data",
    "check_data",
    "check_data_root",
]


def _rel(p: str, root: Path) -> str:
    if not os.path.isabs(p):
        return p
    try:
        return os.path.relpath(p, root)
    except ValueError:
        return p


def _split_record(ds: Any) -> dict[str, Any]:
    root = Path(getattr(ds, "root", "."))
    h = hashlib.sha256()
    for p, lab in zip(ds.paths, np.asarray(ds.labels).tolist(), strict=True):
        h.update(f"{_rel(str(p), root)}\t{lab}\n".encode())
    return {"n": len(ds.paths), "sha256": h.hexdigest()}


def fingerprint(name: str, train: Any, test: Any | None) -> dict[str, Any]:
    """What identifies a data set: name, class count, and per split size and list digest."""
    rec: dict[str, Any] = {
        "dataset": name,
        "num_classes": len(getattr(train, "class_names", []) or []),
        "train": _split_record(train),
    }
    if test is not None:
        rec["test"] = _split_record(test)
    if name == "synthetic":  # same file names for every seed: the generator's parameters
        manifest = Path(getattr(train, "root", ".")) / "manifest.json"
        try:
            rec["generator"] = json.loads(manifest.read_text(encoding="utf-8")).get("params")
        except (OSError, json.JSONDecodeError):
            rec["generator"] = None
    return rec


def write_fingerprint(run_dir: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Write ``record`` to ``run_dir/data.json`` (temporary file, then rename)."""
    from fghash.util.atomic import atomic_write_text

    return atomic_write_text(
        Path(run_dir) / DATA_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n"
    )


def record_training_data(dataset: str, data_root: str, train: Any, run_dir: Path) -> None:
    """Write ``run_dir/data.json`` for a run training on ``train`` (once: a resumed run
    keeps the record of the data it started on)."""
    from fghash.data import load_dataset

    if (Path(run_dir) / DATA_FILE).is_file():
        return
    try:
        test = load_dataset(dataset, data_root, split="test")
    except FghashError:
        test = None  # a layout without a test split: only the training list is recorded
    write_fingerprint(run_dir, fingerprint(dataset, train, test))


def check_data_root(dataset: str, root: str | os.PathLike[str], trained_on: str) -> None:
    """Refuse, before any loading, a data root that cannot hold the data set: encoding
    must never generate (synthetic) or download anything."""
    p = Path(root).expanduser()
    where = f"the run was trained on {trained_on}"
    if not p.is_dir():
        raise FghashError(
            f"data root {p} does not exist ({where}); encoding never generates or downloads "
            "data, so point --data-root at the data set the run was trained on."
        )
    if dataset == "synthetic":
        from fghash.data.synthetic import MANIFEST

        if not (p / MANIFEST).is_file():
            raise FghashError(
                f"{p} holds no synthetic data set ({MANIFEST} is missing; {where}); encoding "
                "never generates data, so point --data-root at the set the run was trained on."
            )


def check_data(
    run_dir: str | os.PathLike[str],
    record: dict[str, Any],
    root: str | os.PathLike[str],
    *,
    database_indices: np.ndarray | None = None,
    all_train: bool = False,
) -> None:
    """Compare the data set found at ``root`` (its :func:`fingerprint` ``record``) with the
    one ``run_dir`` was trained on; raise :class:`FghashError` saying what differs.

    Without ``data.json`` (older runs) only ``database_indices``, the training items with
    learned codes, can be compared: they must exist, and with ``all_train`` (no items
    held out for validation) they are the whole training split.
    """
    run_dir = Path(run_dir)
    saved_path = run_dir / DATA_FILE
    hint = "point --data-root at the data set the run was trained on."
    if saved_path.is_file():
        try:
            saved = json.loads(saved_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise FghashError(
                f"{saved_path} is not valid JSON; the run folder is damaged."
            ) from None
        differ = []
        for key in ("dataset", "num_classes", "generator"):
            if key in saved and saved[key] != record.get(key):
                differ.append(f"{key} {record.get(key)!r}, not {saved.get(key)!r}")
        for split in ("train", "test"):
            a, b = saved.get(split), record.get(split)
            if a is None or b is None:
                continue
            if a["n"] != b["n"]:
                differ.append(f"{b['n']} {split} images, not {a['n']}")
            elif a["sha256"] != b["sha256"]:
                differ.append(f"other {split} images or labels (same count, {a['n']})")
        if differ:
            raise FghashError(
                f"{root} is not the data set {run_dir} was trained on: it has "
                f"{'; '.join(differ)}; {hint}"
            )
        return
    if database_indices is not None and len(database_indices):  # a run older than data.json
        n = record["train"]["n"]
        need = int(np.max(database_indices)) + 1
        if need > n or (all_train and len(database_indices) != n):
            raise FghashError(
                f"{root} has {n} training images but {run_dir} learned codes for "
                f"{len(database_indices)} training items (up to position {need - 1}); {hint}"
            )
