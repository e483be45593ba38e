"""Loaded bundles by name: each opened once, swapped for the new version when it changes.

A bundle is opened as ``fghash search`` opens it (:func:`index.bundle.load_bundle` on the
engine :func:`index.tensor.pick_engine` picks) and kept as a :class:`Loaded` version. A
write (by this server or by ``fghash add`` in another process) switches the bundle folder
in one step (:mod:`index.snapshot`), so the folder's inode names the version: each request
compares it with the loaded one (one ``stat``), and on a change the new version is opened
and put in place of the old with one assignment. A search holds the :class:`Loaded` it
started with until it ends, so it answers from one whole version.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fghash.errors import FghashError

__all__ = ["Loaded", "Registry", "ServedBundle", "UnknownIndex"]


class UnknownIndex(FghashError):
    """A request named an index this server does not serve (HTTP 404)."""


class NotFound(FghashError):
    """A request named an item the index does not hold (HTTP 404)."""


def _folder_key(folder: Path) -> tuple[int, int]:
    st = os.stat(folder)
    return st.st_ino, st.st_dev


@dataclass
class Loaded:
    """One version of a bundle, open: its ``index.json``, index, items and engine."""

    meta: dict[str, Any]
    index: Any
    items: Any
    engine: str  # "faiss", "tensor" or "milvus"
    key: tuple[int, int]  # the bundle folder's (inode, device) when it was opened
    codes_index: Any = None  # the FAISS index the codes of ids queries come from
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _order: np.ndarray | None = None  # positions sorting the ids, when ids are unsorted
    _sorted: bool | None = None

    @property
    def ntotal(self) -> int:
        return int(self.meta["ntotal"])

    @property
    def bits(self) -> int:
        return int(self.meta["bits"])

    @property
    def generation(self) -> int:
        return int(self.meta.get("generation", 1))

    def search(
        self, xq: np.ndarray, k: int, queries: Any = None, **params: Any
    ) -> list[dict[str, Any]]:
        """:func:`index.items.search_items` on this version: what ``fghash search
        --format jsonl`` prints, one dict per query.

        Searches that set parameters on the shared FAISS object (nprobe, ef_search, nflip)
        and every Milvus search (its items are those its search fetched) run one at a time.
        """
        from index.items import search_items

        params = {name: v for name, v in params.items() if v is not None}
        if params or self.engine == "milvus":
            with self._lock:
                return search_items(self.index, self.items, xq, k, queries=queries, **params)
        return search_items(self.index, self.items, xq, k, queries=queries)

    def positions(self, ids: Sequence[int]) -> np.ndarray:
        """Database positions of ``ids``; an id the index does not hold is one sentence."""
        want = np.asarray(list(ids), dtype=np.int64)
        if self.engine == "milvus":
            return self._milvus_positions(want)
        all_ids = self.items.ids
        with self._lock:
            if self._sorted is None:
                self._sorted = bool(np.all(all_ids[1:] > all_ids[:-1]))
                if not self._sorted:
                    self._order = np.argsort(all_ids, kind="stable")
        keys = all_ids if self._sorted else all_ids[self._order]
        at = np.searchsorted(keys, want)
        at_c = np.minimum(at, max(len(keys) - 1, 0))
        found = (at < len(keys)) & (np.asarray(keys[at_c]) == want) if len(keys) else at < 0
        if not np.all(found):
            missing = int(want[np.flatnonzero(~found)[0]])
            raise NotFound(f"id {missing} is not in the index.")
        return at_c if self._sorted else self._order[at_c]  # type: ignore[index]

    def _milvus_positions(self, want: np.ndarray) -> np.ndarray:
        idx = self.index
        got: dict[int, int] = {}
        with self._lock:
            for s in range(0, len(want), 1000):
                chunk = [int(i) for i in want[s : s + 1000]]
                rows = idx.client.query(
                    idx.collection,
                    filter=f"id in {chunk} and pos < {idx.next_pos}",
                    output_fields=["id", "pos"],
                )
                got.update({int(r["id"]): int(r["pos"]) for r in rows})
        for i in want:
            if int(i) not in got:
                raise NotFound(f"id {int(i)} is not in the index.")
        return np.array([got[int(i)] for i in want], dtype=np.int64)

    def codes(self, positions: np.ndarray) -> np.ndarray:
        """Packed codes ``uint8 [n, ceil(bits/8)]`` of the items at ``positions``."""
        nbytes = (self.bits + 7) // 8
        if self.engine == "milvus":
            return self._milvus_codes(positions, nbytes)
        fi = self.codes_index.cpu_index() if self.codes_index is not None else None
        if fi is None:
            fi = self.index.cpu_index()
        with self._lock:
            try:
                if hasattr(fi, "make_direct_map") and getattr(fi, "direct_map", None) is not None:
                    if fi.direct_map.type == 0:  # NoMap: an IVF index looks ids up once built
                        fi.make_direct_map()
                rows = [fi.reconstruct(int(p)) for p in positions]
            except RuntimeError:
                raise FghashError(
                    f"a {self.meta['kind']} index cannot return its stored codes; send the "
                    "query codes instead of ids."
                ) from None
        out = np.asarray(rows, dtype=np.uint8).reshape(len(rows), -1)
        return np.ascontiguousarray(out[:, :nbytes])

    def _milvus_codes(self, positions: np.ndarray, nbytes: int) -> np.ndarray:
        idx = self.index
        pos = [int(p) for p in positions]
        with self._lock:
            rows = idx.client.query(
                idx.collection, filter=f"pos in {sorted(set(pos))}", output_fields=["pos", "code"]
            )
        by_pos = {}
        for r in rows:
            code = r["code"]
            code = code[0] if isinstance(code, list) else code
            by_pos[int(r["pos"])] = np.frombuffer(bytes(code), dtype=np.uint8)[:nbytes]
        return np.stack([by_pos[p] for p in pos]).astype(np.uint8)

    def record(self, position: int) -> dict[str, Any]:
        """``{"id", "label", "path"}`` of one item (Milvus lookups one at a time)."""
        if self.engine == "milvus":
            with self._lock:
                return self.items.record(int(position))
        return self.items.record(int(position))


def open_version(folder: Path, device: str) -> Loaded:
    """Open the bundle version now in ``folder`` on the engine ``fghash search`` picks."""
    from index.bundle import load_bundle
    from index.tensor import pick_engine, tensor_from_binary

    key = _folder_key(folder)
    engine, dev = pick_engine("auto", device, 1, _kind(folder))
    if engine == "tensor":
        meta, index, items = load_bundle(folder, device="cpu")
        if meta["kind"] in ("flat", "ivf"):  # ivf: index.tensor_ivf
            return Loaded(meta, tensor_from_binary(index, device=dev), items, "tensor", key, index)
        engine, dev = "faiss", "cpu"  # the tensor engine searches flat and ivf bundles only
    meta, index, items = load_bundle(folder, device=dev)
    if key != _folder_key(folder):  # switched between the stat and the read: read again
        return open_version(folder, device)
    return Loaded(meta, index, items, "milvus" if meta["kind"] == "milvus" else engine, key)


def _kind(folder: Path) -> Any:
    """The bundle's kind as its ``index.json`` says (None when it cannot be read here:
    :func:`index.bundle.load_bundle` then says why)."""
    from index.folder import read_bundle_meta

    try:
        return read_bundle_meta(folder).get("kind")
    except (FghashError, OSError):
        return None


class ServedBundle:
    """One named bundle: the version loaded now, replaced when the folder changes."""

    def __init__(self, name: str, path: str | os.PathLike[str], device: str = "cpu") -> None:
        from index.folder import bundle_path

        self.name = name
        self.folder = bundle_path(path).absolute()
        self.device = device
        self._reload = threading.Lock()
        self._current = open_version(self.folder, device)

    def current(self) -> Loaded:
        """The version to answer from: the loaded one, or the new one when the bundle
        folder was switched since (opened once, however many requests ask at once)."""
        loaded = self._current
        try:
            key = _folder_key(self.folder)
        except OSError:
            return loaded  # between the two renames of a switch without exchange
        if key == loaded.key:
            return loaded
        return self.refresh()

    def refresh(self) -> Loaded:
        """Open the version now in the folder if it is not the loaded one."""
        with self._reload:
            loaded = self._current
            try:
                if _folder_key(self.folder) == loaded.key:
                    return loaded
            except OSError:
                return loaded
            new = open_version(self.folder, self.device)
            self._current = new  # one assignment: requests in flight keep the old one
            return new


class Registry:
    """The bundles a server serves, by name."""

    def __init__(self) -> None:
        self.bundles: dict[str, ServedBundle] = {}

    def add(self, name: str, path: str | os.PathLike[str], device: str = "cpu") -> ServedBundle:
        """Open the bundle at ``path`` under ``name`` (a bundle that cannot open raises)."""
        if name in self.bundles:
            raise FghashError(f"two bundles are named {name!r}; give each its own --name.")
        served = ServedBundle(name, path, device)
        self.bundles[name] = served
        return served

    def get(self, name: str) -> ServedBundle:
        try:
            return self.bundles[name]
        except KeyError:
            known = ", ".join(sorted(self.bundles)) or "none"
            raise UnknownIndex(f"no index named {name!r} here (served: {known}).") from None

    def names(self) -> list[str]:
        return list(self.bundles)
