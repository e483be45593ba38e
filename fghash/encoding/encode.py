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

:func:`load` gives a Python encoder for a run: ``fghash.load(run).encode(images)``.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from fghash.codes import Split, make_codes_file, pack_bits, signs_to_codes, write_codes
from fghash.codes.parts import PartStore, parts_folder
from fghash.encoding.loop import Encoded, embed, encode_images
from fghash.encoding.positions import PositionDataset
from fghash.errors import FghashError
from fghash.runs.config import ASYMMETRIC_METHODS, TrainConfig
from fghash.runs.fingerprint import check_data, check_data_root, fingerprint
from fghash.runs.folder import load_run
from fghash.util.device import resolve_device
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
PROGRESS_EVERY_S = 30.0  # seconds between progress lines while a split is encoded
DEFAULT_CHUNK = 8192  # images per part of a streaming encode
# Tests only: kill -9 this process after writing that many parts (a crash at a known point).
_CRASH_ENV = "FGHASH_TEST_KILL_AFTER_PARTS"
_parts_written = [0]  # parts written by this process, for _CRASH_ENV


def default_num_workers() -> int:
    """DataLoader workers for decoding and transforms: the usable cores, at most 4."""
    from fghash.util.threads import usable_cores

    return min(4, usable_cores())


def _part_name(split: str, c: int) -> str:
    return f"{split}-{c:06d}"


@torch.no_grad()
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
    from tqdm.auto import tqdm

    from fghash.data import collate_skip_none

    if chunk_size % batch_size:
        raise FghashError(f"chunk size {chunk_size} must be a multiple of batch size {batch_size}.")
    indices = np.asarray(indices, dtype=np.int64)
    n = len(indices)
    n_parts = -(-n // chunk_size)
    todo = [c for c in range(n_parts) if not store.has(_part_name(split, c))]
    if not todo:
        return n_parts
    spans = [(c, c * chunk_size, min(n, (c + 1) * chunk_size)) for c in todo]
    order = np.concatenate([np.arange(a, b) for _, a, b in spans])
    loader = DataLoader(
        PositionDataset(ds, indices[order]),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_skip_none,
    )
    kill_after = int(os.environ.get(_CRASH_ENV) or 0)
    images_done = Progress(f"{desc}, images", n, done=n - len(order), logger=log)
    was_training = model.training
    model.eval()
    try:
        batches = iter(tqdm(loader, desc=desc, leave=False, disable=None if progress else True))
        for c, a, b in spans:
            rel, back, pos = [], [], []
            for _ in range(-(-(b - a) // batch_size)):
                batch = next(batches)
                if batch is None or len(batch[0]) == 0:
                    continue
                images, _, p = batch
                r, x = embed(model, images.to(device))
                rel.append(r.cpu().numpy().astype(np.float32))
                if features:
                    back.append(x.cpu().numpy().astype(np.float32))
                pos.append(order[np.asarray(p, dtype=np.int64)])
                if progress:
                    images_done.step(n=len(p), every=PROGRESS_EVERY_S)
            arrays = {
                "relaxed": np.concatenate(rel) if rel else np.zeros((0, bits), np.float32),
                "positions": np.concatenate(pos) if pos else np.zeros(0, np.int64),
                "requested": np.int64(b - a),
            }
            if features:
                arrays["backbone"] = np.concatenate(back) if back else np.zeros((0, 0), np.float32)
            store.write(_part_name(split, c), **arrays)
            _parts_written[0] += 1
            if _parts_written[0] == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
    finally:
        model.train(was_training)
    return n_parts


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
    processes (default :func:`default_num_workers`) and the network outputs written in
    parts of ``chunk_size`` images (rounded to whole batches) to ``.<out>.parts`` beside
    the output (:mod:`fghash.codes.parts`), so memory holds one part, not the whole split. The
    codes file is assembled from the parts under a temporary name and renamed into
    place: a partial file never carries the final name. After a crash, ``resume=True``
    reuses the parts already written (same settings required) and gives the same file
    as an uninterrupted run; without it a leftover parts folder is an error (``force``
    starts again).
    """
    from fghash.data import build_transform, load_dataset

    run_dir, out_path = Path(run_dir), Path(out_path)
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
    chunk = max(1, -(-chunk_size // batch_size)) * batch_size
    workers = default_num_workers() if num_workers is None else int(num_workers)

    cfg, state, model = load_run(run_dir, device)
    root = str(data_root) if data_root is not None else cfg.data_root
    check_data_root(cfg.dataset, root, cfg.data_root)  # never generate or download data
    if database == "learned" and cfg.method not in ASYMMETRIC_METHODS:
        log.info("%s learns no database codes; encoding the database images instead", cfg.method)
        database = "encode"
    dev = resolve_device(device)
    tf = build_transform(False, cfg.image_size, resize=cfg.resize)
    datasets: dict[str, Any] = {}

    def dataset(split: str) -> Any:
        key = "test" if split == "test" else "train"
        if key not in datasets:
            datasets[key] = load_dataset(
                cfg.dataset, root, split=key, transform=tf, skip_corrupt=True
            )
        return datasets[key]

    db_idx = state["database_indices"].numpy()
    check_data(
        run_dir,
        fingerprint(cfg.dataset, dataset("train"), dataset("test")),
        root,
        database_indices=db_idx,
        all_train=not cfg.val_fraction,
    )
    learned_B = state["B"].numpy()
    from fghash.runs.folder import CHECKPOINT

    ckpt = run_dir / CHECKPOINT
    store = PartStore(
        parts_folder(out_path),
        {
            "run_dir": str(run_dir.resolve()),
            "checkpoint": [ckpt.stat().st_size, ckpt.stat().st_mtime_ns] if ckpt.exists() else None,
            "database": database,
            "features": features,
            "split_map": smap,
            "data_root": str(root),
            "batch_size": batch_size,
            "chunk_size": chunk,
            "device": str(dev),
        },
        resume=resume,
        fresh=force and not resume,
    )
    try:
        splits: dict[str, Split] = {}
        feature_parts: dict[str, tuple[str, str, int]] = {}  # split -> (part key, kind, parts)
        skipped: dict[str, int] = {}
        attribute_names = None
        phases = Progress("encoding, splits", len(smap), logger=log)
        for name, src in smap.items():
            ds = dataset(src)
            if src == "train":
                indices = db_idx
            elif src == "val":
                indices = state["val_indices"].numpy()
            else:
                indices = np.arange(len(ds.labels), dtype=np.int64)
            learned = name == "database" and database == "learned"
            if learned and features == "none":
                positions, skipped[name] = np.arange(len(indices)), 0
                codes = pack_bits(learned_B[positions] > 0)
            else:
                n_parts = encode_to_parts(
                    model,
                    ds,
                    indices,
                    store,
                    name,
                    chunk_size=chunk,
                    bits=cfg.bits,
                    device=dev,
                    batch_size=batch_size,
                    num_workers=workers,
                    features=features == "backbone",
                    progress=progress,
                    desc=f"encoding {name} ({src})",
                )
                positions, codes = _codes_from_parts(store, name, n_parts, run_dir)
                skipped[name] = len(indices) - len(positions)
                if learned:
                    codes = pack_bits(learned_B[positions] > 0)
                if features != "none":
                    key = "relaxed" if features == "relaxed" else "backbone"
                    kind = "relaxed_code" if features == "relaxed" else "backbone"
                    feature_parts[name] = (key, kind, n_parts)
            ids = indices[positions]
            if skipped[name]:
                log.warning(
                    "split %s: skipped %d unreadable image(s) of %d",
                    name,
                    skipped[name],
                    len(indices),
                )
            attrs = getattr(ds, "attributes", None)
            if attrs is not None:
                attribute_names = list(getattr(ds, "attribute_names", None) or []) or None
            paths = getattr(ds, "paths", None)
            ds_root = str(getattr(ds, "root", root))
            splits[name] = Split(
                codes=codes,
                ids=ids,
                labels=np.asarray(ds.labels)[ids],
                paths=[_rel_path(str(paths[i]), ds_root) for i in ids]
                if paths is not None
                else None,
                attributes=np.asarray(attrs)[ids].astype(np.uint8) if attrs is not None else None,
            )
            phases.step(f"{name} = {src} split, {len(ids)} items")
        config = {
            **cfg.to_dict(),
            "encode": {
                "run_dir": str(run_dir),
                "database": database,
                "features": features,
                "split_map": smap,
                "skipped": skipped,
                "outer_iterations_done": int(state["next_iter"]),
            },
        }
        cf = make_codes_file(
            cfg.bits,
            splits.pop("database"),
            method=cfg.method,
            config=config,
            attribute_names=attribute_names,
        )
        cf.splits.update(splits)
        total = sum(skipped.values())
        if total:
            log.warning("skipped %d unreadable image(s) in all: %s", total, skipped)
        # codes, ids, labels and paths first, then the features streamed in part by part
        assembled = write_codes(store.folder / "assembled.h5", cf, overwrite=True)
        _append_features(assembled, store, feature_parts)
        os.replace(assembled, out_path)
        store.remove()
        return out_path
    except Exception:
        if store.empty():  # a failure before any part: leave nothing behind
            store.remove()
        else:
            log.warning("%s keeps the parts written so far; --resume continues", store.folder)
        raise


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
    time, laid out as :func:`fghash.codes.file.write_codes` lays out datasets."""
    import h5py

    from fghash.codes.file import _row_chunks

    with h5py.File(path, "r+") as f:
        for split, (key, kind, n_parts) in feature_parts.items():
            n, row, dim, d = len(f[split]["codes"]), 0, 0, None
            for c in range(n_parts):
                arr = store.read(_part_name(split, c))[key]
                dim = arr.shape[1] if arr.ndim == 2 else dim
                if not len(arr):
                    continue
                if d is None:
                    shape = (n, dim)
                    d = f[split].create_dataset(
                        "features", shape=shape, dtype=np.float32, chunks=_row_chunks(shape, 4)
                    )
                d[row : row + len(arr)] = arr
                row += len(arr)
            if d is None:  # no image of the split could be read
                d = f[split].create_dataset("features", shape=(n, dim), dtype=np.float32)
            d.attrs["kind"] = kind


class HashEncoder:
    """Encode images with a trained run: ``fghash.load(run_dir).encode(images)``.

    ``images`` may be a tensor batch ``[B, 3, H, W]`` (or one ``[3, H, W]`` image) that is
    already model input (transformed and normalised), or one or more PIL images or file
    paths, which get the run's evaluation transform (resize, centre crop, normalise).
    """

    def __init__(self, model: torch.nn.Module, config: TrainConfig, device: Any) -> None:
        from fghash.data import build_transform

        self.model = model.eval()
        self.config = config
        self.device = device
        self.transform = build_transform(False, config.image_size, resize=config.resize)

    @property
    def bits(self) -> int:
        return self.config.bits

    def _load_image(self, item: Any) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        if isinstance(item, Image.Image):
            return self.transform(item.convert("RGB"))
        path = Path(item)
        try:
            with Image.open(path) as im:
                return self.transform(im.convert("RGB"))
        except FileNotFoundError:
            raise FghashError(f"{path}: no such image file.") from None
        except (UnidentifiedImageError, OSError) as e:
            raise FghashError(f"{path} could not be read as an image ({e}).") from None

    def _batches(self, images: Any, batch_size: int) -> Iterator[torch.Tensor]:
        if torch.is_tensor(images):
            t = images.unsqueeze(0) if images.dim() == 3 else images
            if t.dim() != 4 or t.shape[1] != 3:
                raise FghashError(f"expected an image tensor [B, 3, H, W], got {list(t.shape)}.")
            for s in range(0, len(t), batch_size):
                yield t[s : s + batch_size].float()
            return
        from PIL import Image

        if isinstance(images, (str, os.PathLike, Image.Image)):
            images = [images]
        items = list(images) if isinstance(images, Iterable) else [images]
        for s in range(0, len(items), batch_size):
            yield torch.stack([self._load_image(x) for x in items[s : s + batch_size]])

    @torch.no_grad()
    def _run(self, images: Any, batch_size: int, backbone: bool) -> np.ndarray:
        outs = []
        for batch in self._batches(images, batch_size):
            r, x = embed(self.model, batch.to(self.device))
            outs.append((x if backbone else r).cpu().numpy())
        if not outs:
            return np.zeros((0, self.bits), np.float32)
        return np.concatenate(outs).astype(np.float32)

    def encode_relaxed(self, images: Any, batch_size: int = 64) -> np.ndarray:
        """Relaxed codes ``tanh(v)``, float32 ``[N, bits]``."""
        return self._run(images, batch_size, backbone=False)

    def encode(self, images: Any, batch_size: int = 64) -> np.ndarray:
        """Packed binary codes, uint8 ``[N, ceil(bits/8)]`` (schema-v1 bit order)."""
        return signs_to_codes(self.encode_relaxed(images, batch_size))

    def features(self, images: Any, batch_size: int = 64) -> np.ndarray:
        """Pooled backbone features, float32 ``[N, d]``."""
        return self._run(images, batch_size, backbone=True)


def load(run_dir: str | os.PathLike[str], device: str = "auto") -> HashEncoder:
    """A :class:`HashEncoder` for the trained run in ``run_dir``."""
    cfg, _, model = load_run(Path(run_dir), device)
    return HashEncoder(model, cfg, resolve_device(device))
