"""Encode images with a trained run and write a schema-v1 codes file.

Paper protocol (ADSH, A²-Net): the queries are the test split, encoded by the network as
``b = sgn(tanh(v))`` (``sgn(0) = +1``); the database is the training set with the codes B
learned during training (``database="learned"``). ``database="encode"`` instead passes the
database images through the network too, as symmetric methods do.

The codes file also gets, per split, the relaxed codes ``tanh(v)`` as ``features``
(kind ``"relaxed_code"``, for the exact float baseline) or, with ``features="backbone"``,
the pooled backbone features (kind ``"backbone"``); the labels, ids (positions in the
data set's split), paths relative to the data set root, attributes where the data set
has them, the method and the resolved training config.

Unreadable images are skipped with a warning and counted (the counts are written into the
file's config under ``encode.skipped``); they never stop the encoding halfway.

Every path here runs the network through :func:`fghash.encoding.loop.run_batches`, as
training validation does, so a run's codes do not depend on which path made them.
:func:`load` (:mod:`fghash.encoding.encoder`) gives a Python encoder for a run:
``fghash.load(run).encode(images)``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fghash.codes import Split, make_codes_file, pack_bits, signs_to_codes, write_codes
from fghash.codes.parts import PartStore, parts_folder
from fghash.encoding.encoder import HashEncoder, load
from fghash.encoding.loop import (
    BatchOutput,
    Encoded,
    HostCopies,
    default_num_workers,
    encode_images,
    eval_autocast,
    eval_mode,
    image_loader,
    prepare_model,
    run_batches,
)
from fghash.errors import FghashError
from fghash.runs.config import ASYMMETRIC_METHODS, TrainConfig
from fghash.runs.fingerprint import check_data, check_data_root, fingerprint
from fghash.runs.folder import CHECKPOINT, load_run
from fghash.util.device import resolve_device
from fghash.util.faults import checkpoint
from fghash.util.locks import writer_lock
from fghash.util.progress import Progress

__all__ = [
    "Encoded",
    "HashEncoder",
    "encode_images",
    "encode_to_parts",
    "encode_run",
    "load",
    "DEFAULT_SPLIT_MAP",
]

log = logging.getLogger(__name__)

# codes-file split -> data split ("train" = the run's database items, "val" = its
# held-out training items, "test" = the test split)
DEFAULT_SPLIT_MAP: dict[str, str] = {"query": "test", "database": "train"}
_DATA_SPLITS = ("train", "val", "test")
DEFAULT_CHUNK = 8192  # images per part of a streaming encode


def _part_name(split: str, c: int) -> str:
    return f"{split}-{c:06d}"


def encode_to_parts(
    model: torch.nn.Module,
    ds: Any,
    indices: Sequence[int] | np.ndarray,
    store: PartStore,
    split: str,
    *,
    chunk_size: int,
    bits: int,
    device: Any = "cpu",
    batch_size: int = 64,
    num_workers: int = 0,
    features: bool = False,
    progress: bool = True,
    desc: str = "encoding",
    autocast: torch.dtype | None = None,
) -> int:
    """Encode items ``indices`` of ``ds`` into parts ``<split>-<c>`` of ``store``, part ``c``
    holding items ``[c·chunk_size, (c+1)·chunk_size)``; parts already in the store are
    skipped, so a rerun continues where a killed one stopped. Returns the number of parts.

    ``chunk_size`` must be a multiple of ``batch_size``: every batch then belongs to one
    part, and a resumed run forms exactly the batches of an uninterrupted one (the same
    float results). One DataLoader (``num_workers`` processes decoding and transforming)
    serves all missing parts. A part holds ``relaxed`` (float32 ``tanh(v)``), ``backbone``
    (with ``features``), ``positions`` (into ``indices``, of the items that could be
    read) and ``requested`` (items asked for).
    """
    if chunk_size % batch_size:
        raise FghashError(f"chunk size {chunk_size} must be a multiple of batch size {batch_size}.")
    device = resolve_device(device)
    indices = np.asarray(indices, dtype=np.int64)
    n = len(indices)
    n_parts = -(-n // chunk_size)
    todo = [c for c in range(n_parts) if not store.has(_part_name(split, c))]
    if not todo:
        return n_parts
    spans = [(c, c * chunk_size, min(n, (c + 1) * chunk_size)) for c in todo]
    order = np.concatenate([np.arange(a, b) for _, a, b in spans])
    loader = image_loader(
        ds, indices[order], batch_size=batch_size, num_workers=num_workers, device=device
    )
    meter = Progress(f"{desc}, images", n, done=n - len(order), logger=log) if progress else None
    with eval_mode(model):
        outputs = run_batches(
            model, loader, device=device, autocast=autocast, meter=meter,
            desc=desc if progress else None,
        )  # fmt: skip
        for c, a, b in spans:
            part = _Part(bits, features)
            for _ in range(-(-(b - a) // batch_size)):
                part.add(next(outputs), order)
            store.write(_part_name(split, c), **part.arrays(b - a))
    return n_parts


@dataclass
class _Part:
    """The host arrays of one part, gathered batch by batch (see :func:`encode_to_parts`)."""

    bits: int
    features: bool
    relaxed: HostCopies = field(default_factory=HostCopies)
    backbone: HostCopies = field(default_factory=HostCopies)
    positions: list[np.ndarray] = field(default_factory=list)

    def add(self, out: BatchOutput, order: np.ndarray) -> None:
        if out.relaxed is None:
            return
        self.relaxed.add(out.relaxed)  # copies started now, waited for once in arrays()
        if self.features:
            self.backbone.add(out.backbone)
        self.positions.append(order[out.positions])

    def arrays(self, requested: int) -> dict[str, Any]:
        positions = self.positions
        arrays: dict[str, Any] = {
            "relaxed": self.relaxed.numpy(np.zeros((0, self.bits), np.float32)),
            "positions": np.concatenate(positions) if positions else np.zeros(0, np.int64),
            "requested": np.int64(requested),
        }
        if self.features:
            arrays["backbone"] = self.backbone.numpy(np.zeros((0, 0), np.float32))
        return arrays


def _rel_path(p: str, root: str) -> str:
    if not os.path.isabs(p):
        return p
    try:
        rel = os.path.relpath(p, root)
    except ValueError:
        return str(p)
    return str(p) if rel.startswith("..") else rel


def encode_run(
    run_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    database: str = "learned",
    features: str = "relaxed",
    split_map: Mapping[str, str] | None = None,
    batch_size: int = 64,
    device: str = "auto",
    num_workers: int | None = None,
    data_root: str | os.PathLike[str] | None = None,
    progress: bool = True,
    force: bool = False,
    resume: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
    wait: float | None = 0,
) -> Path:
    """Encode a trained run's splits into a schema-v1 codes file at ``out_path``.

    ``database``: ``"learned"`` (the learned codes B, paper protocol) or ``"encode"``
    (network codes of the database images). ``features``: ``"relaxed"``, ``"backbone"``
    or ``"none"``. ``split_map`` maps codes-file split names to data splits
    (``"train"`` = the run's database items, ``"val"`` = its held-out training items,
    ``"test"``); default ``{"query": "test", "database": "train"}``. DPSH and HashNet
    runs learn no database codes, so for them ``"learned"`` means ``"encode"``. ``data_root``
    overrides the run's data folder (moved data). Returns the path written.

    Streaming: images are decoded and transformed in ``num_workers`` DataLoader
    processes (default :func:`fghash.encoding.loop.default_num_workers`) and the network outputs written in
    parts of ``chunk_size`` images (rounded to whole batches) to ``.<out>.parts`` beside
    the output (:mod:`fghash.codes.parts`), so memory holds one part, not the whole split. The
    codes file is assembled from the parts under a temporary name and renamed into
    place: a partial file never carries the final name. After a crash, ``resume=True``
    reuses the parts already written (same settings required) and gives the same file
    as an uninterrupted run; without it a leftover parts folder is an error (``force``
    starts again).

    The codes file and its parts folder are written holding the codes file's writer lock
    (:func:`fghash.util.locks.writer_lock`, waiting up to ``wait`` seconds, ``None``: for
    ever); "exists / no ``force``" and the parts folder are checked again once it is
    held, so two encodes to one ``out_path`` never mix their parts.
    """
    run_dir, out_path = Path(run_dir), Path(out_path)
    smap = _checked_options(
        out_path, database, features, split_map, force=force, batch_size=batch_size,
        chunk_size=chunk_size,
    )  # fmt: skip
    with writer_lock(out_path, wait=wait, what=f"the codes file {out_path}"):
        if out_path.exists() and not force:  # again: another writer may have made it
            raise FghashError(f"{out_path} already exists; pass --force to replace it.")
        return _encode_locked(
            run_dir, out_path, smap, database, features, device=device, data_root=data_root,
            batch_size=batch_size, chunk_size=chunk_size, num_workers=num_workers,
            progress=progress, force=force, resume=resume,
        )  # fmt: skip


def _encode_locked(
    run_dir: Path,
    out_path: Path,
    smap: dict[str, str],
    database: str,
    features: str,
    *,
    device: str,
    data_root: str | os.PathLike[str] | None,
    batch_size: int,
    chunk_size: int,
    num_workers: int | None,
    progress: bool,
    force: bool,
    resume: bool,
) -> Path:
    """:func:`encode_run` once the codes file's writer lock is held."""
    job = _open_job(
        run_dir, database, features, device=device, data_root=data_root, batch_size=batch_size,
        chunk=max(1, -(-chunk_size // batch_size)) * batch_size,
        workers=num_workers,
        progress=progress,
    )  # fmt: skip
    store = PartStore(
        parts_folder(out_path), job.parts_meta(smap), resume=resume, fresh=force and not resume
    )
    try:
        _write_codes_file(job, store, smap, out_path)
        store.remove()
        return out_path
    except Exception:
        if store.empty():  # a failure before any part: leave nothing behind
            store.remove()
        else:
            log.warning("%s keeps the parts written so far; --resume continues", store.folder)
        raise


def _checked_options(
    out_path: Path,
    database: str,
    features: str,
    split_map: Mapping[str, str] | None,
    *,
    force: bool,
    batch_size: int,
    chunk_size: int,
) -> dict[str, str]:
    """The split map, once :func:`encode_run`'s options are known to fit together."""
    if database not in ("learned", "encode"):
        raise FghashError(f"--database must be learned or encode, got {database!r}.")
    if features not in ("relaxed", "backbone", "none"):
        raise FghashError(f"--features must be relaxed, backbone or none, got {features!r}.")
    smap = dict(DEFAULT_SPLIT_MAP if split_map is None else split_map)
    if "database" not in smap:
        raise FghashError("the split map needs a 'database' entry (a codes file needs one).")
    for name, src in smap.items():
        if src not in _DATA_SPLITS:
            raise FghashError(
                f"split {name!r} maps to {src!r}; data splits are {', '.join(_DATA_SPLITS)}."
            )
    if database == "learned" and smap["database"] != "train":
        raise FghashError(
            "--database learned uses the codes learned for the training set, so the "
            "database split must map to 'train'; use --database encode otherwise."
        )
    if out_path.exists() and not force:
        raise FghashError(f"{out_path} already exists; pass --force to replace it.")
    if not out_path.parent.is_dir():
        raise FghashError(f"{out_path}: the folder {out_path.parent} does not exist.")
    if batch_size < 1 or chunk_size < 1:
        raise FghashError(
            f"--batch-size and --chunk-size must be positive, got {batch_size} and {chunk_size}."
        )
    return smap


@dataclass
class _Job:
    """One :func:`encode_run`: the trained run, its data and how to encode it."""

    run_dir: Path
    cfg: TrainConfig
    state: dict[str, Any]
    model: torch.nn.Module
    device: torch.device
    root: str  # the data set folder
    database: str  # "learned" or "encode"
    features: str  # "relaxed", "backbone" or "none"
    batch_size: int
    chunk: int  # images per part, a whole number of batches
    workers: int
    progress: bool
    autocast: torch.dtype | None  # :func:`fghash.encoding.loop.eval_autocast`
    datasets: dict[str, Any] = field(default_factory=dict)

    def dataset(self, split: str) -> Any:
        """The data split ``split`` reads from (``val`` items are train items)."""
        from fghash.data import build_transform, load_dataset

        key = "test" if split == "test" else "train"
        if key not in self.datasets:
            tf = build_transform(False, self.cfg.image_size, resize=self.cfg.resize)
            self.datasets[key] = load_dataset(
                self.cfg.dataset, self.root, split=key, transform=tf, skip_corrupt=True
            )
        return self.datasets[key]

    def indices(self, src: str) -> np.ndarray:
        """Positions in :meth:`dataset` of the items of data split ``src``."""
        if src == "train":
            return self.state["database_indices"].numpy()
        if src == "val":
            return self.state["val_indices"].numpy()
        return np.arange(len(self.dataset(src).labels), dtype=np.int64)

    def parts_meta(self, smap: Mapping[str, str]) -> dict[str, Any]:
        """What the parts folder records; a resume must match it."""
        ckpt = self.run_dir / CHECKPOINT
        return {
            "run_dir": str(self.run_dir.resolve()),
            "checkpoint": [ckpt.stat().st_size, ckpt.stat().st_mtime_ns] if ckpt.exists() else None,
            "database": self.database,
            "features": self.features,
            "split_map": dict(smap),
            "data_root": str(self.root),
            "batch_size": self.batch_size,
            "chunk_size": self.chunk,
            "device": str(self.device),
        }


def _open_job(
    run_dir: Path,
    database: str,
    features: str,
    *,
    device: str,
    data_root: str | os.PathLike[str] | None,
    **settings: Any,
) -> _Job:
    """Load the run, find its data and check it is the data the run trained on."""
    cfg, state, model = load_run(run_dir, device)
    root = str(data_root) if data_root is not None else cfg.data_root
    check_data_root(cfg.dataset, root, cfg.data_root)  # never generate or download data
    if database == "learned" and cfg.method not in ASYMMETRIC_METHODS:
        log.info("%s learns no database codes; encoding the database images instead", cfg.method)
        database = "encode"
    dev = resolve_device(device)
    if settings["workers"] is None:
        settings["workers"] = default_num_workers(dev.type)
    job = _Job(
        run_dir, cfg, state, prepare_model(model, dev), dev, root, database, features,
        autocast=eval_autocast(cfg, dev), **settings,
    )  # fmt: skip
    check_data(
        run_dir,
        fingerprint(cfg.dataset, job.dataset("train"), job.dataset("test")),
        root,
        database_indices=job.indices("train"),
        all_train=not cfg.val_fraction,
    )
    return job


@dataclass
class _EncodedSplit:
    split: Split
    skipped: int  # unreadable images left out
    feature_parts: int | None  # parts holding its features; None: none stored
    attribute_names: list[str] | None


def _encode_split(job: _Job, store: PartStore, name: str, src: str) -> _EncodedSplit:
    """Codes-file split ``name`` from data split ``src``: network codes written to parts
    (unless only the learned codes are asked for), or the learned codes B."""
    ds, indices = job.dataset(src), job.indices(src)
    learned = name == "database" and job.database == "learned"
    n_parts = None
    if learned and job.features == "none":
        positions = np.arange(len(indices))
    else:
        n_parts = encode_to_parts(
            job.model, ds, indices, store, name, chunk_size=job.chunk, bits=job.cfg.bits,
            device=job.device, batch_size=job.batch_size, num_workers=job.workers,
            features=job.features == "backbone", progress=job.progress,
            desc=f"encoding {name} ({src})", autocast=job.autocast,
        )  # fmt: skip
        positions, codes = _codes_from_parts(store, name, n_parts, job.run_dir)
    if learned:
        codes = pack_bits(job.state["B"].numpy()[positions] > 0)
    skipped = len(indices) - len(positions)
    if skipped:
        log.warning("split %s: skipped %d unreadable image(s) of %d", name, skipped, len(indices))
    ids = indices[positions]
    attrs = getattr(ds, "attributes", None)
    paths = getattr(ds, "paths", None)
    ds_root = str(getattr(ds, "root", job.root))
    split = Split(
        codes=codes,
        ids=ids,
        labels=np.asarray(ds.labels)[ids],
        paths=[_rel_path(str(paths[i]), ds_root) for i in ids] if paths is not None else None,
        attributes=np.asarray(attrs)[ids].astype(np.uint8) if attrs is not None else None,
    )
    names = None
    if attrs is not None:
        names = list(getattr(ds, "attribute_names", None) or []) or None
    kept = n_parts if job.features != "none" else None
    return _EncodedSplit(split, skipped, kept, names)


def _write_codes_file(job: _Job, store: PartStore, smap: Mapping[str, str], out: Path) -> None:
    """Encode every split, then assemble the codes file beside the parts and move it to
    ``out``: codes, ids, labels and paths first, then the features part by part."""
    done: dict[str, _EncodedSplit] = {}
    phases = Progress("encoding, splits", len(smap), logger=log)
    for name, src in smap.items():
        done[name] = _encode_split(job, store, name, src)
        phases.step(f"{name} = {src} split, {len(done[name].split.ids)} items")
    skipped = {name: e.skipped for name, e in done.items()}
    attribute_names = None
    for e in done.values():
        if e.split.attributes is not None:
            attribute_names = e.attribute_names
    config = {
        **job.cfg.to_dict(),
        "encode": {
            "run_dir": str(job.run_dir),
            "database": job.database,
            "features": job.features,
            "split_map": dict(smap),
            "skipped": skipped,
            "outer_iterations_done": int(job.state["next_iter"]),
        },
    }
    splits = {name: e.split for name, e in done.items()}
    cf = make_codes_file(
        job.cfg.bits,
        splits.pop("database"),
        method=job.cfg.method,
        config=config,
        attribute_names=attribute_names,
    )
    cf.splits.update(splits)
    total = sum(skipped.values())
    if total:
        log.warning("skipped %d unreadable image(s) in all: %s", total, skipped)
    key, kind = (
        ("relaxed", "relaxed_code") if job.features == "relaxed" else ("backbone", "backbone")
    )
    feature_parts = {
        name: (key, kind, e.feature_parts)
        for name, e in done.items()
        if e.feature_parts is not None
    }
    assembled = write_codes(store.folder / "assembled.h5", cf, overwrite=True)
    _append_features(assembled, store, feature_parts)
    checkpoint("encode:assembled")
    os.replace(assembled, out)


def _codes_from_parts(
    store: PartStore, split: str, n_parts: int, run_dir: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Positions read and packed codes ``sgn(tanh(v))`` of a split, from its parts."""
    positions, codes = [], []
    for c in range(n_parts):
        part = store.read(_part_name(split, c))
        if not np.isfinite(part["relaxed"]).all():
            raise FghashError(
                f"{run_dir}: the network gives NaN or infinite outputs for split {split} in "
                "evaluation mode (BatchNorm running statistics of a very short or unstable "
                "run); train longer or with a lower --lr."
            )
        positions.append(part["positions"])
        codes.append(signs_to_codes(part["relaxed"]))
    return np.concatenate(positions), np.concatenate(codes)


def _append_features(
    path: Path, store: PartStore, feature_parts: Mapping[str, tuple[str, str, int]]
) -> None:
    """Add each split's ``features`` dataset to the codes file at ``path``, one part at a
    time, laid out as :func:`fghash.codes.file.write_codes` lays out datasets (each
    dataset's room on disk set aside first: a full disk is one clean error)."""
    from fghash.codes.file import row_chunks
    from fghash.codes.room import dataset_bytes, h5_file

    with h5_file(path, "r+") as (f, room):
        for split, (key, kind, n_parts) in feature_parts.items():
            n, row, dim, d = len(f[split]["codes"]), 0, 0, None
            for c in range(n_parts):
                arr = store.read(_part_name(split, c))[key]
                dim = arr.shape[1] if arr.ndim == 2 else dim
                if not len(arr):
                    continue
                if d is None:
                    shape = (n, dim)
                    room.take(dataset_bytes(shape, 4, row_chunks(shape, 4)))
                    d = f[split].create_dataset(
                        "features", shape=shape, dtype=np.float32, chunks=row_chunks(shape, 4)
                    )
                d[row : row + len(arr)] = arr
                row += len(arr)
            if d is None:  # no image of the split could be read
                room.take(dataset_bytes((n, dim), 4))
                d = f[split].create_dataset("features", shape=(n, dim), dtype=np.float32)
            d.attrs["kind"] = kind
