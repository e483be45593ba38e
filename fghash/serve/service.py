"""What the routes do, without HTTP: search, look up items, describe bundles, write.

:class:`Service` holds the :class:`~fghash.serve.registry.Registry`, the image
encoders, the metrics and the server's settings; each method is one endpoint's work and
raises :class:`fghash.errors.FghashError` (one sentence) for a bad request.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fghash.errors import FghashError
from fghash.serve.images import Encoders, check_upload, confined_path
from fghash.serve.metrics import Metrics
from fghash.serve.queries import QueryError, check_count, parse_b64, parse_hex
from fghash.serve.registry import Loaded, Registry, ServedBundle

__all__ = ["Service", "Settings"]


@dataclass
class Settings:
    """How a server answers (the ``fghash serve`` options)."""

    device: str = "cpu"  # FAISS and the image encoder: cpu, gpu, auto
    data_root: str | None = None  # item images: this folder, else the run's data root
    token: str | None = None  # the bearer token; None: writes are off
    max_queries: int = 1000  # queries per search request
    max_upload_mb: float = 20.0  # request body limit (413 above)


class Service:
    """The server's state and the work behind each endpoint."""

    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry, self.settings = registry, settings
        self.metrics = Metrics()
        self.encoders = Encoders(settings.device)

    # -- describing -------------------------------------------------------------------
    def describe(self, served: ServedBundle) -> dict[str, Any]:
        """One bundle as ``GET /indexes`` lists it."""
        meta = served.current().meta
        run = _run_of(meta)
        return {
            "name": served.name,
            "path": str(served.folder),
            "bits": int(meta["bits"]),
            "ntotal": int(meta["ntotal"]),
            "kind": meta["kind"],
            "backend": "milvus" if meta["kind"] == "milvus" else "faiss",
            "engine": served.current().engine,
            "run": run,
            "image_queries": bool(run and Path(run).is_dir()),
            "writable": self.settings.token is not None,
            "generation": int(meta.get("generation", 1)),
            "attribute_names": _attribute_names(meta),
        }

    def bits(self, served: ServedBundle) -> dict[str, Any]:
        """``GET /indexes/{name}/bits``: the attribute each bit follows, where known."""
        meta = served.current().meta
        names = _attribute_names(meta)
        return {
            "bits": int(meta["bits"]),
            "attribute_of_bit": _bit_attributes(meta),
            "attribute_names": names,
        }

    # -- searching --------------------------------------------------------------------
    def search(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /indexes/{name}/search`` with the validated JSON ``body``."""
        loaded = self.registry.get(name).current()
        given = [key for key in ("codes", "codes_b64", "ids") if body.get(key) is not None]
        if len(given) != 1:
            raise QueryError("give the queries as exactly one of codes, codes_b64 or ids.")
        values = body[given[0]]
        check_count(len(values), self.settings.max_queries)
        params = {p: body.get(p) for p in ("nprobe", "ef_search", "nflip")}
        params.update(_radius(body.get("radius"), body.get("max_results")))
        k = 0 if params.get("radius") is not None else _checked_k(body.get("k", 10), loaded)
        _check_nflip(params["nflip"], loaded.meta)
        queries: Any = None
        with self.metrics.stage("decode"):
            if given[0] == "codes":
                xq = parse_hex(values, loaded.bits)
            elif given[0] == "codes_b64":
                xq = parse_b64(values, loaded.bits)
        if given[0] == "ids":
            with self.metrics.stage("metadata"):
                positions = loaded.positions(values)
                queries = (
                    [loaded.record(int(p)) for p in positions]
                    if loaded.engine == "milvus"
                    else loaded.items.records(positions)
                )
                xq = loaded.codes(positions)
        return self._answer(name, loaded, xq, k, queries, params)

    def search_images(
        self,
        name: str,
        uploads: Sequence[tuple[str, bytes]],
        k: int,
        radius: int | None = None,
        max_results: int | None = None,
    ) -> dict[str, Any]:
        """``POST /indexes/{name}/search/image``: uploads encoded by the bundle's run
        (with ``radius``: every item within that Hamming distance, ``k`` not used)."""
        served = self.registry.get(name)
        loaded = served.current()
        check_count(len(uploads), self.settings.max_queries)
        params = _radius(radius, max_results)
        k = 0 if params else _checked_k(k, loaded)
        with self.metrics.stage("decode"):
            for n, data in uploads:
                check_upload(n, data)
        from fghash.encoding.image_query import query_run

        run = query_run(None, loaded.meta, served.folder)
        with self.metrics.stage("encode"):
            xq = self.encoders.encode(uploads, run, loaded.bits)
        from fghash.codes import code_to_hex  # each image's code: the page's bit strips

        queries = [
            {"id": None, "label": None, "path": n, "code": code_to_hex(c)}
            for (n, _), c in zip(uploads, xq, strict=True)
        ]
        return self._answer(name, loaded, xq, k, queries, params)

    def _answer(
        self,
        name: str,
        loaded: Loaded,
        xq: np.ndarray,
        k: int,
        queries: Any,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        with self.metrics.stage("search"):
            results = loaded.search(xq, k, queries, **params)
        return {"index": name, "generation": loaded.generation, "results": results}

    # -- items ------------------------------------------------------------------------
    def item(self, name: str, item_id: int) -> dict[str, Any]:
        """``GET /indexes/{name}/items/{id}``."""
        from fghash.codes import code_to_hex

        loaded = self.registry.get(name).current()
        with self.metrics.stage("metadata"):
            pos = int(loaded.positions([item_id])[0])
            rec = loaded.record(pos)
            code = loaded.codes(np.array([pos]))[0]
        return {**rec, "position": pos, "code": code_to_hex(code)}

    def item_image(self, name: str, item_id: int) -> Path:
        """The image file of an item, confined to the data root."""
        served = self.registry.get(name)
        loaded = served.current()
        with self.metrics.stage("metadata"):
            rec = loaded.record(int(loaded.positions([item_id])[0]))
        return confined_path(self._data_root(loaded.meta), rec["path"])

    def _data_root(self, meta: dict[str, Any]) -> str | None:
        if self.settings.data_root is not None:
            return self.settings.data_root
        run = _run_of(meta)
        if not run:
            return None
        from fghash.viz.search_grid import run_data_root

        return run_data_root(run)

    # -- writes ---------------------------------------------------------------------------
    def add_codes(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /indexes/{name}/items`` with JSON: hex codes, ids, labels, paths."""
        from fghash.serve.writes import add_codes

        served = self.registry.get(name)
        loaded = served.current()
        codes = body["codes"]
        check_count(len(codes), self.settings.max_queries)
        with self.metrics.stage("decode"):
            xb = parse_hex(codes, loaded.bits)
        added = add_codes(
            served.folder, loaded.bits, xb, body["ids"], body.get("labels"), body.get("paths")
        )
        return self._added(served, added)

    def add_images(
        self,
        name: str,
        uploads: Sequence[tuple[str, bytes]],
        label: int | None,
        first_id: int | None,
    ) -> dict[str, Any]:
        """``POST /indexes/{name}/items`` with uploaded images, encoded by the run."""
        from fghash.encoding.image_query import query_run
        from fghash.serve.writes import add_images

        served = self.registry.get(name)
        check_count(len(uploads), self.settings.max_queries)
        for n, data in uploads:
            check_upload(n, data)
        run = query_run(None, served.current().meta, served.folder)
        with self.metrics.stage("encode"):
            added = add_images(served.folder, run, uploads, label, first_id, self.settings.device)
        return self._added(served, added)

    def remove(self, name: str, ids: Sequence[int], *, one: bool = False) -> dict[str, Any]:
        """``DELETE /indexes/{name}/items/{id}`` (``one``) and ``POST …/items/remove``."""
        from fghash.serve.registry import NotFound
        from fghash.serve.writes import remove_ids

        served = self.registry.get(name)
        check_count(len(ids), self.settings.max_queries)
        if not ids:
            raise QueryError("the request names no ids to remove.")
        try:
            removed = remove_ids(served.folder, ids)
        except FghashError as e:
            if one and "is not in the index" in str(e):
                raise NotFound(f"index {name!r} holds no item with id {ids[0]}.") from None
            raise
        new = served.refresh()
        return {"removed": removed.removed, "ntotal": new.ntotal, "generation": new.generation}

    def _added(self, served: ServedBundle, added: Any) -> dict[str, Any]:
        new = served.refresh()
        return {"added": int(added.added), "ntotal": new.ntotal, "generation": new.generation}


def _checked_k(k: Any, loaded: Loaded) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise QueryError(f"k must be a positive integer, got {k!r}.")
    if k > loaded.ntotal:
        raise QueryError(
            f"k={k} is larger than the index ({loaded.ntotal} items); use k <= {loaded.ntotal}."
        )
    return k


def _radius(radius: Any, max_results: Any) -> dict[str, Any]:
    """``{"radius", "max_results"}`` of a radius search, checked (empty without a radius):
    ``k`` is then not used, as for ``fghash search --radius``."""
    from index.radius import check_max_results, check_radius

    if radius is None:
        if max_results is not None:
            raise QueryError("max_results goes with radius (a radius search).")
        return {}
    try:
        return {"radius": check_radius(radius), "max_results": check_max_results(max_results)}
    except FghashError as e:
        raise QueryError(str(e)) from None


def _check_nflip(nflip: Any, meta: dict[str, Any]) -> None:
    """As ``fghash search``: no more bit flips than the hash index's ``hash_b`` bits."""
    b = (meta.get("params") or {}).get("hash_b")
    if isinstance(nflip, int) and isinstance(b, int) and nflip > b:
        raise QueryError(
            f"nflip {nflip} is more than the {b} bits this index hashes on; use {b} or less."
        )


def _run_of(meta: dict[str, Any]) -> str | None:
    run = (meta.get("codes") or {}).get("run")
    return str(run) if run else None


def _attribute_names(meta: dict[str, Any]) -> list[str] | None:
    """The attribute names the bundle's codes file stores, when it is there."""
    path = (meta.get("codes") or {}).get("path")
    if not path or not os.path.isfile(path):
        return None
    try:
        import h5py

        with h5py.File(path, "r") as f:
            if "attribute_names" not in f:
                return None
            return [
                v.decode() if isinstance(v, bytes) else str(v) for v in f["attribute_names"][()]
            ]
    except (OSError, KeyError, ValueError):
        return None


def _bit_attributes(meta: dict[str, Any]) -> list[str | None] | None:
    """Per bit, the attribute an ``fghash explain`` result beside the codes file names
    (its ``best_per_bit``), or None when there is none."""
    path = (meta.get("codes") or {}).get("path")
    if not path:
        return None
    bits = int(meta["bits"])
    for doc_path in sorted(
        glob.glob(os.path.join(glob.escape(os.path.dirname(path)), "*", "explain.json"))
    ):
        try:
            doc = json.loads(Path(doc_path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        best = _find_key(doc, "best_per_bit")
        if isinstance(best, list) and len(best) == bits:
            out: list[str | None] = [None] * bits
            for row in best:
                if (
                    isinstance(row, dict)
                    and isinstance(row.get("bit"), int)
                    and 0 <= row["bit"] < bits
                ):
                    out[row["bit"]] = row.get("attribute")
            return out
    return None


def _find_key(doc: Any, key: str) -> Any:
    if isinstance(doc, dict):
        if key in doc:
            return doc[key]
        values: Any = doc.values()
    elif isinstance(doc, list):
        values = doc
    else:
        return None
    for v in values:
        found = _find_key(v, key)
        if found is not None:
            return found
    return None
