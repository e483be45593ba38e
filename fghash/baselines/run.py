"""Fit a shallow baseline on a features file and write one codes file per code length.

Protocol (ADSH / A²-Net): the database split is the training split, so the hash
functions are fitted on the database features (and labels, for supervised methods),
then the database and the query split are both encoded with them.

Output names: with one code length the codes go to exactly ``out_path``; with several,
the length is added before the suffix, ``codes.h5`` → ``codes-12.h5``, ``codes-24.h5``, …
Each file is a schema-v1 codes file (``method`` = the baseline's name, ``config`` = its
parameters, the seed and the features file with its checksum) that carries the input's
ids, labels, paths and float features (same ``kind``), so ``fghash build-index``,
``search`` and ``bench`` (float baseline included) use it unchanged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from fghash.baselines._registry import create_baseline, get_baseline
from fghash.baselines.base import Hasher
from fghash.codes import CodesFile, Split, file_checksum, write_codes
from fghash.codes.bits import parse_bits  # re-exported: the one --bits parser
from fghash.codes.features import FeatureSplit, read_features, read_features_config
from fghash.errors import FghashError
from fghash.util.locks import writer_lock

__all__ = ["run_baseline", "output_paths", "parse_bits"]

logger = logging.getLogger(__name__)


def output_paths(out_path: str | os.PathLike[str], bits_list: list[int]) -> list[Path]:
    """``out_path`` itself for one length; ``stem-BITS.suffix`` for each of several."""
    out = Path(out_path)
    if len(bits_list) == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{b}{out.suffix}") for b in bits_list]


def run_baseline(
    method: str,
    features_path: str | os.PathLike[str],
    bits_list: int | str | Iterable[int],
    out_path: str | os.PathLike[str],
    *,
    seed: int = 0,
    overwrite: bool = False,
    wait: float | None = 0,
    **kw: Any,
) -> list[Path]:
    """Fit ``method`` on the database features of ``features_path`` for each code length and
    write one codes file per length (names: see the module docstring). Returns the paths.

    Existing outputs are an error unless ``overwrite``; every output name is checked
    before any fitting starts. Extra keyword arguments go to the method (e.g.
    ``n_iter=50`` for ITQ); ``None`` values are ignored.

    Every output is written holding its writer lock (:func:`fghash.util.locks.writer_lock`,
    taken in name order, waiting up to ``wait`` seconds, ``None``: for ever), and the
    outputs are checked again once the locks are held.
    """
    cls = get_baseline(method)
    bits = parse_bits(bits_list)
    features_path = Path(features_path)
    outs = output_paths(out_path, bits)
    _check_outputs(outs, features_path, overwrite)
    # Build every model first so bad parameters fail before any work.
    models = [create_baseline(cls.name, b, seed=seed, **kw) for b in bits]
    with ExitStack() as locks:
        for out in sorted(set(outs), key=str):
            locks.enter_context(writer_lock(out, wait=wait, what=f"the codes file {out}"))
        _check_outputs(outs, features_path, overwrite)  # again: another writer may have made one
        return _fit_all(cls, models, features_path, outs, seed)


def _fit_all(
    cls: type[Hasher], models: list[Hasher], features_path: Path, outs: list[Path], seed: int
) -> list[Path]:
    """:func:`run_baseline` once the outputs' writer locks are held."""
    feats = _training_features(features_path, cls, models)
    source = {
        "path": str(features_path.resolve()),
        "checksum": file_checksum(features_path),
        "config": read_features_config(features_path),
    }
    written: list[Path] = []
    for model, out in tqdm(
        list(zip(models, outs, strict=True)), desc=cls.name, unit="length", disable=None
    ):
        written.append(_fit_and_write(model, feats, source, seed, out))
    return written


def _check_outputs(outs: list[Path], features_path: Path, overwrite: bool) -> None:
    """Refuse an output that exists (unless ``overwrite``), lacks its folder, or is the input."""
    for p in outs:
        if p.exists() and not overwrite:
            raise FghashError(f"{p} already exists; pass --force to replace it.")
        if not p.parent.is_dir():
            raise FghashError(f"{p}: the folder {p.parent} does not exist.")
        if p.resolve() == features_path.resolve():
            raise FghashError(f"{p} is the features file itself; choose another --out.")


def _training_features(
    features_path: Path, cls: type[Hasher], models: list[Hasher]
) -> dict[str, FeatureSplit]:
    """Every split's features, checked to train ``models``: a database split (the training
    split) with labels when the method is supervised and a dimension every model takes."""
    feats = read_features(features_path, splits=None)
    if "database" not in feats:
        raise FghashError(
            f"{features_path} has no database split with features; the database split is the "
            "training split and must have features."
        )
    db = feats["database"]
    if cls.supervised and db.labels is None:
        raise FghashError(
            f"{cls.name} is supervised but {features_path}: /database has no labels; "
            "use lsh, pcah or itq, or a features file with labels."
        )
    for model in models:
        try:
            model.check_dim(db.dim)
        except FghashError as e:
            raise FghashError(f"{features_path}: {e}") from None
    return feats


def _fit_and_write(
    model: Hasher,
    feats: dict[str, FeatureSplit],
    source: dict[str, Any],
    seed: int,
    out: Path,
) -> Path:
    """Fit ``model`` on the database split, encode every split and write the codes file."""
    db = feats["database"]
    model.fit(db.features, db.labels)
    splits = {
        name: Split(
            codes=model.encode(fs.features),
            ids=fs.ids,
            labels=fs.labels,
            paths=fs.paths,
            features=fs.features,
            features_kind=fs.kind,
        )
        for name, fs in feats.items()
    }
    dataset = source["config"].get("dataset")
    config = {
        "method": model.name,
        **({"dataset": dataset} if isinstance(dataset, str) else {}),
        "params": model.params(),
        "seed": seed,
        "train_split": "database",
        "n_train": len(db),
        "features": {
            "path": source["path"],
            "checksum": source["checksum"],
            "kind": db.kind,
            "dim": db.dim,
        },
        "fit": model.fit_summary(),
    }
    write_codes(out, CodesFile(bits=model.bits, splits=splits, method=model.name, config=config))
    logger.info("%s %d bits: wrote %s", model.name, model.bits, out)
    return out
