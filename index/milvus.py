"""A Milvus collection as an fghash index: the way past one machine.

``fghash build-index CODES --backend milvus --uri URI`` loads one split of a codes file
into a Milvus collection and writes a small bundle folder whose ``index.json`` records
the URI and the collection (kind ``"milvus"``); ``fghash search`` on that bundle asks
Milvus and prints the same records as for a FAISS bundle.

Collection schema (one row per item)::

    pos    INT64 primary key: the item's position 0..N-1, as FAISS numbers items
    id     INT64: the codes file's id
    label  INT64 (single-label data) or labels ARRAY<INT64> (set label indices)
    path   VARCHAR (when the codes file has paths)
    code   BINARY_VECTOR of 8 * ceil(bits / 8) dimensions (the packed code; unused high
           bits are 0, so Hamming distances equal those of the ``bits``-bit codes)

The vector index is ``BIN_FLAT`` with metric ``HAMMING`` (exact; Milvus's default
binary metric is JACCARD, so fghash always sets HAMMING) or, on a Milvus server,
``BIN_IVF_FLAT`` (``nlist`` lists, ``nprobe`` at search time).

``URI`` is a local file path ending in ``.db`` (Milvus Lite, embedded, no server:
``pip install 'fghash[milvus]'``, which pins ``milvus-lite<3`` because Milvus Lite 3
dropped binary vectors) or ``http://host:19530`` (a Milvus server or cluster). pymilvus
is imported only here, only when a Milvus bundle is built or searched.

Like FAISS search, Milvus makes no promise about the order of equal distances; compare
results tie-aware (see :mod:`index.binary`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fghash.codes import Split, SplitReader, nbytes_for, open_split
from fghash.errors import FghashError
from index.folder import (
    base_meta,
    bundle_folder,
    check_target,
    codes_source,
    now_iso,
    write_meta,
)
from index.items import split_labels_form
from index.milvus_connect import connect, is_lite_uri, normalise_uri, reason

__all__ = [
    "MILVUS_INDEX_TYPES",
    "MilvusIndex",
    "MilvusItems",
    "build_milvus_bundle",
    "milvus_meta",
    "open_milvus",
    "append_milvus_items",
    "default_collection",
    "is_lite_uri",
]

logger = logging.getLogger(__name__)

MILVUS_INDEX_TYPES = ("BIN_FLAT", "BIN_IVF_FLAT")
# Rows per insert call, and queries and hits per search call (Milvus caps a message at
# 64 MB; a hit carries its id, label and path).
_INSERT_ROWS = 20_000
_SEARCH_QUERIES = 1000
_SEARCH_HITS = 100_000
# Milvus's largest topk.
MAX_K = 16_384
_PATH_MAX = 65_535
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


def default_collection(out: str | os.PathLike[str]) -> str:
    """A collection name from the bundle folder's name: ``fghash_<name>``."""
    stem = re.sub(r"[^A-Za-z0-9_]", "_", Path(out).name) or "index"
    return f"fghash_{stem}"[:255]


class MilvusIndex:
    """A Milvus collection searched like :class:`index.binary.BinaryIndex`.

    :meth:`search` returns ``(D, I)``: int32 Hamming distances and int64 positions,
    ``-1`` where Milvus returned fewer than ``k``; the items fetched with the results
    are kept for :class:`MilvusItems`.
    """

    kind = "milvus"
    device = "cpu"

    def __init__(
        self, client: Any, collection: str, bits: int, ntotal: int, params: dict[str, Any]
    ) -> None:
        self.client, self.collection = client, collection
        self.bits, self.ntotal, self.params = int(bits), int(ntotal), dict(params)
        # positions run 0..next_pos-1, with gaps where items were removed (fghash remove)
        self.next_pos = int(self.params.get("next_pos", ntotal))
        self.dim = 8 * nbytes_for(self.bits)
        self.fields: list[str] = list(params.get("fields", ["id"]))
        self._fetched: dict[int, dict[str, Any]] = {}

    @property
    def nbytes(self) -> int:
        return nbytes_for(self.bits)

    def search(
        self, xq: np.ndarray, k: int, *, nprobe: int | None = None, **unused: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        q = self._checked(xq, unused)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise FghashError(f"k must be a positive integer, got {k!r}.")
        if k > self.ntotal:
            raise FghashError(
                f"k={k} is larger than the database ({self.ntotal} items); use k <= {self.ntotal}."
            )
        if k > MAX_K:
            raise FghashError(
                f"k={k} is above the {MAX_K} results a Milvus search returns per query (Milvus "
                f"cannot page past it); use -k {MAX_K} or less, or a FAISS bundle."
            )
        nq = q.shape[0]
        D = np.full((nq, k), np.iinfo(np.int32).max, dtype=np.int32)
        I = np.full((nq, k), -1, dtype=np.int64)
        for i, hits in enumerate(self._hits(q, int(k), self._search_params(nprobe))):
            for r, (pos, dist) in enumerate(hits):
                D[i, r], I[i, r] = dist, pos
        # Milvus may order equal distances arbitrarily; keep rows sorted by distance.
        order = np.argsort(D, axis=1, kind="stable")
        return np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)

    def range_search(
        self,
        xq: np.ndarray,
        radius: int,
        *,
        max_results: int | None = None,
        nprobe: int | None = None,
        **unused: Any,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every item within Hamming distance ``radius`` (``d <= radius``), as
        :meth:`index.binary.BinaryIndex.range_search` returns it: Milvus's binary range
        search (HAMMING keeps ``range_filter <= d < radius``, so it is asked for
        ``radius + 1`` from 0) with ``limit = max_results + 1``, sorted by (distance,
        position) and cut at ``max_results``. Exact on ``BIN_FLAT``; when a query is
        truncated, which of the items at its last distance come back is Milvus's choice,
        as for its k-NN.

        On ``BIN_IVF_FLAT`` the answer comes from its k-NN instead (``k = max_results +
        1``, hits ``d <= radius`` kept): Milvus's range search there skips items within
        the radius even at ``nprobe = nlist`` (seen on a Milvus 2.3.5 server), while its
        k-NN is exact at ``nprobe = nlist`` and otherwise as approximate as any search."""
        from index.radius import check_max_results, check_radius, from_ranges

        radius, max_results = check_radius(radius), check_max_results(max_results)
        if max_results >= MAX_K:
            raise FghashError(
                f"max_results={max_results} is more than a Milvus search returns; use "
                f"--max-results {MAX_K - 1} or less."
            )
        q = self._checked(xq, unused)
        sp = self._search_params(nprobe)
        limit = min(max_results + 1, self.ntotal)
        if self.params.get("index_type") != "BIN_IVF_FLAT":
            sp["params"].update(radius=min(radius, self.dim) + 1, range_filter=0)
        hits = self._hits(q, limit, sp)
        lims = np.zeros(len(hits) + 1, dtype=np.int64)
        np.cumsum([len(h) for h in hits], out=lims[1:])
        flat = [hit for h in hits for hit in h]
        I = np.array([p for p, _ in flat], dtype=np.int64)
        D = np.array([d for _, d in flat], dtype=np.int64)
        return from_ranges(lims, D, I, radius, max_results)

    def _checked(self, xq: np.ndarray, unused: dict[str, Any]) -> np.ndarray:
        """The query codes, checked; search options Milvus has no use for refused."""
        from index.padding import check_codes

        for name, value in unused.items():
            if value is not None:
                raise FghashError(
                    f"{name.replace('_', '-')} does not apply to a Milvus index; "
                    f"use --nprobe with BIN_IVF_FLAT."
                )
        q = np.asarray(xq)
        if q.ndim == 2 and q.dtype == np.uint8 and q.shape[1] != self.nbytes:
            raise FghashError(
                f"query codes have {q.shape[1] * 8} bits per item but the index holds "
                f"{self.bits}-bit codes; use queries encoded with the same code length."
            )
        return check_codes(q, self.bits, "query codes")

    def _search_params(self, nprobe: int | None) -> dict[str, Any]:
        sp: dict[str, Any] = {"metric_type": "HAMMING", "params": {}}
        if self.params.get("index_type") == "BIN_IVF_FLAT":
            sp["params"]["nprobe"] = int(nprobe or self.params.get("nprobe", 16))
        elif nprobe is not None:
            raise FghashError("nprobe applies to BIN_IVF_FLAT collections only.")
        return sp

    def _hits(self, q: np.ndarray, limit: int, sp: dict[str, Any]) -> list[list[tuple[int, int]]]:
        """Per query, Milvus's ``(position, distance)`` hits; the items fetched with them
        are kept for :class:`MilvusItems`."""
        out: list[list[tuple[int, int]]] = []
        self._fetched = {}
        step = max(1, min(_SEARCH_QUERIES, _SEARCH_HITS // limit))
        for s in range(0, q.shape[0], step):
            batch = [bytes(row) for row in q[s : s + step]]
            try:
                res = self.client.search(
                    self.collection,
                    data=batch,
                    anns_field="code",
                    limit=limit,
                    filter=f"pos < {self.next_pos}",  # rows the bundle records, not a writer's
                    consistency_level="Strong",  # rows other processes inserted, too
                    search_params=sp,
                    output_fields=self.fields,
                )
            except Exception as e:
                raise FghashError(
                    f"Milvus search in {self.collection!r} failed: {reason(e)}"
                ) from None
            for hits in res:
                row = []
                for hit in hits:
                    pos = int(hit["id"])
                    row.append((pos, int(round(float(hit["distance"])))))
                    self._fetched[pos] = dict(hit.get("entity", {}))
                out.append(row)
        return out

    def add(
        self,
        codes: np.ndarray,
        ids: np.ndarray,
        labels: np.ndarray | None = None,
        paths: Sequence[str] | None = None,
    ) -> None:
        """Insert items at positions ``ntotal ..``; on failure remove what was inserted."""
        start = self.next_pos
        try:
            _insert(self.client, self.collection, start, codes, ids, labels, paths, self.fields)
            self.client.flush(self.collection)
        except Exception as e:
            try:
                self.client.delete(self.collection, filter=f"pos >= {start}")
            finally:
                if not isinstance(e, FghashError):
                    e = FghashError(f"inserting into {self.collection!r} failed: {reason(e)}")
                raise e from None
        self.ntotal += len(codes)
        self.next_pos += len(codes)
        self.params["next_pos"] = self.next_pos


class MilvusItems:
    """Item records of a Milvus index, looked up by position (as :class:`ItemMeta`)."""

    def __init__(self, index: MilvusIndex) -> None:
        self.index = index

    def __len__(self) -> int:
        return self.index.ntotal

    def records(self, positions: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        pos = [int(p) for p in np.asarray(positions).ravel()]
        missing = [p for p in set(pos) if p not in self.index._fetched]
        if missing:
            got = self.index.client.query(
                self.index.collection,
                filter=f"pos in {missing}",
                output_fields=self.index.fields,
                consistency_level="Strong",
            )
            for row in got:
                self.index._fetched[int(row["pos"])] = row
        return [_record(self.index._fetched[p]) for p in pos]

    def record(self, position: int) -> dict[str, Any]:
        return self.records([position])[0]

    def labels_form(self) -> Any:
        """``"multi"``, ``"single"`` or None, as the collection's fields say (the width of
        multi-hot labels is not recorded)."""
        fields = self.index.fields
        if "labels" in fields:
            return "multi"
        return "single" if "label" in fields else None

    def has_paths(self) -> bool:
        """True when the collection stores paths."""
        return "path" in self.index.fields

    def present_id(self, ids: np.ndarray) -> int | None:
        """One of ``ids`` that the collection already holds, or None (asked 1000 at a time)."""
        wanted = [int(i) for i in np.asarray(ids)]
        client, name = self.index.client, self.index.collection
        for s in range(0, len(wanted), 1000):
            got = client.query(
                name,
                filter=f"id in {wanted[s : s + 1000]}",
                output_fields=["id"],
                consistency_level="Strong",  # ids another process just added, too
            )
            if got:
                return int(got[0]["id"])
        return None


def _record(entity: dict[str, Any]) -> dict[str, Any]:
    if "labels" in entity:
        label: Any = sorted(int(v) for v in entity["labels"])
    elif "label" in entity:
        label = int(entity["label"])
    else:
        label = None
    return {"id": int(entity["id"]), "label": label, "path": entity.get("path")}


def _label_rows(labels: np.ndarray | None) -> list[Any] | None:
    if labels is None:
        return None
    if labels.ndim == 2:
        return [[int(j) for j in np.flatnonzero(row)] for row in labels]
    return [int(v) for v in labels]


def _insert(
    client: Any,
    collection: str,
    start: int,
    codes: np.ndarray,
    ids: np.ndarray,
    labels: np.ndarray | None,
    paths: Sequence[str] | None,
    fields: list[str],
) -> None:
    from tqdm.auto import tqdm

    n = len(codes)
    if ("path" in fields) != (paths is not None):
        raise FghashError(
            f"the collection {collection!r} {'stores' if 'path' in fields else 'has no'} "
            f"paths but the new items {'have none' if 'path' in fields else 'do'}."
        )
    if ("labels" in fields or "label" in fields) != (labels is not None):
        raise FghashError(
            f"the collection {collection!r} {'stores' if labels is None else 'has no'} labels "
            f"but the new items {'have none' if labels is None else 'do'}."
        )
    lab_key = "labels" if "labels" in fields else "label"
    blocks = range(0, n, _INSERT_ROWS)
    for s in tqdm(blocks, desc="insert", unit="block", disable=None if n > _INSERT_ROWS else True):
        e = min(n, s + _INSERT_ROWS)
        lab = _label_rows(None if labels is None else labels[s:e])
        rows = []
        for j in range(s, e):
            row: dict[str, Any] = {"pos": start + j, "id": int(ids[j]), "code": bytes(codes[j])}
            if lab is not None:
                row[lab_key] = lab[j - s]
            if paths is not None:
                row["path"] = str(paths[j])
            rows.append(row)
        client.insert(collection, rows)
        logger.debug("inserted %d of %d items into %s", e, n, collection)


def _schema(client: Any, bits: int, labels: Any, paths: bool) -> tuple[Any, list[str]]:
    from pymilvus import DataType, MilvusClient

    s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("pos", DataType.INT64, is_primary=True)
    s.add_field("id", DataType.INT64)
    fields = ["id"]
    if labels == "single":
        s.add_field("label", DataType.INT64)
        fields.append("label")
    elif labels is not None:
        s.add_field(
            "labels",
            DataType.ARRAY,
            element_type=DataType.INT64,
            max_capacity=max(1, int(labels[1])),
        )
        fields.append("labels")
    if paths:
        s.add_field("path", DataType.VARCHAR, max_length=_PATH_MAX)
        fields.append("path")
    s.add_field("code", DataType.BINARY_VECTOR, dim=8 * nbytes_for(bits))
    return s, fields


def milvus_meta(index: MilvusIndex, source: dict[str, Any] | None) -> dict[str, Any]:
    """The ``index.json`` of a Milvus bundle: where the collection lives, no local index."""
    return base_meta(
        "milvus",
        index.bits,
        index.dim,
        padded=False,
        params=index.params,
        ntotal=index.ntotal,
        built_on="milvus",
        codes=source,
        files={},
    )


def _collection_name(out: Path, collection: str | None) -> str:
    name = collection or default_collection(out)
    if not _NAME.match(name):
        raise FghashError(
            f"collection name {name!r} must start with a letter or underscore and hold only "
            f"letters, digits and underscores."
        )
    return name


def _checked_uri(uri: str, index_type: str) -> str:
    if index_type not in MILVUS_INDEX_TYPES:
        raise FghashError(
            f"unknown Milvus index type {index_type!r}; choose {' or '.join(MILVUS_INDEX_TYPES)}."
        )
    uri = normalise_uri(uri)
    if index_type == "BIN_IVF_FLAT" and is_lite_uri(uri):
        raise FghashError(
            "Milvus Lite (a local .db file) serves BIN_FLAT only; use --milvus-index BIN_FLAT "
            "or a Milvus server URI (http://host:19530) for BIN_IVF_FLAT."
        )
    return uri


def _drop_existing(client: Any, name: str, uri: str, overwrite: bool) -> None:
    if client.has_collection(name):
        if not overwrite:
            raise FghashError(
                f"the Milvus collection {name!r} already exists at {uri}; pass --force to "
                f"replace it or choose another --collection."
            )
        client.drop_collection(name)


def _fill(client: Any, name: str, r: SplitReader, fields: list[str]) -> None:
    """Insert every row of the split ``r`` reads, block by block, and flush."""
    for s, e in r.blocks(1 << 20):
        _insert(
            client,
            name,
            s,
            r.read("codes", s, e),
            r.read("ids", s, e),
            r.read("labels", s, e) if r.has("labels") else None,
            r.read("paths", s, e) if r.has("paths") else None,
            fields,
        )
    client.flush(name)


def _index_and_load(
    client: Any, name: str, n: int, nlist: int | None, params: dict[str, Any]
) -> None:
    """Build the HAMMING vector index ``params["index_type"]`` and load the collection;
    BIN_IVF_FLAT records its ``nlist`` (default sqrt(n)) and ``nprobe`` in ``params``."""
    import math

    index_type = params["index_type"]
    ip = client.prepare_index_params()
    if index_type == "BIN_IVF_FLAT":
        nlist = nlist or max(1, int(round(math.sqrt(n))))
        params["nlist"], params["nprobe"] = nlist, min(16, nlist)
        ip.add_index("code", index_type=index_type, metric_type="HAMMING", params={"nlist": nlist})
    else:
        ip.add_index("code", index_type=index_type, metric_type="HAMMING")
    client.create_index(name, ip)
    client.load_collection(name)


def build_milvus_bundle(
    codes_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    uri: str,
    collection: str | None = None,
    split: str = "database",
    index_type: str = "BIN_FLAT",
    nlist: int | None = None,
    overwrite: bool = False,
) -> tuple[MilvusIndex, Path]:
    """Insert one split of a codes file into a Milvus collection and write a bundle.

    The collection is created (an existing one is replaced only with ``overwrite``),
    filled in batches of rows read block by block, indexed (``index_type``, metric
    HAMMING) and loaded; the bundle folder ``out`` records URI, collection, bits and
    the codes file. If anything fails the new collection is dropped and ``out`` is left
    as it was.
    """
    out, codes_path = Path(out), Path(codes_path)
    uri = _checked_uri(uri, index_type)
    name = _collection_name(out, collection)
    check_target(out, overwrite)
    with open_split(codes_path, split) as r:
        r.validate()
        if r.n == 0:
            raise FghashError("the database is empty; an index needs at least one item.")
        client = connect(uri)
        _drop_existing(client, name, uri, overwrite)
        schema, fields = _schema(client, r.bits, split_labels_form(r), r.has("paths"))
        params: dict[str, Any] = {
            "uri": uri,
            "collection": name,
            "index_type": index_type,
            "metric": "HAMMING",
            "fields": fields,
        }
        try:
            client.create_collection(name, schema=schema)
            _fill(client, name, r, fields)
            _index_and_load(client, name, r.n, nlist, params)
            index = MilvusIndex(client, name, r.bits, r.n, params)
            with bundle_folder(out, overwrite=overwrite) as tmp:
                write_meta(tmp, milvus_meta(index, codes_source(r)))
        except BaseException as e:
            try:
                client.drop_collection(name)
            except Exception:  # the original error matters more
                pass
            if isinstance(e, Exception) and not isinstance(e, FghashError):
                raise FghashError(
                    f"building the Milvus collection {name!r} failed: {reason(e)}"
                ) from None
            raise
    logger.info("loaded %d items into Milvus collection %s at %s", index.ntotal, name, uri)
    return index, out


def open_milvus(meta: dict[str, Any]) -> tuple[MilvusIndex, MilvusItems]:
    """Connect to the collection an ``index.json`` of kind ``milvus`` names."""
    params = dict(meta["params"])
    client = connect(params["uri"])
    name = params["collection"]
    if not client.has_collection(name):
        raise FghashError(
            f"the Milvus collection {name!r} no longer exists at {params['uri']}; build the "
            f"index again."
        )
    client.load_collection(name)
    index = MilvusIndex(client, name, int(meta["bits"]), int(meta["ntotal"]), params)
    return index, MilvusItems(index)


def append_milvus_items(
    tmp: Path, index: MilvusIndex, new: Split, source: dict[str, Any], meta: dict[str, Any]
) -> None:
    """Insert ``new`` into the collection and write the bundle's next ``index.json`` into
    the new folder ``tmp`` (keeping ``created``, one ``generation`` more).

    Rows at positions from the recorded ``next_pos`` on are a dead writer's unrecorded
    insert (readers never see them: :meth:`MilvusIndex.search` filters on ``pos``), so
    they go first. If the new ``index.json`` cannot be written the rows go again."""
    old_n = index.next_pos
    index.client.delete(index.collection, filter=f"pos >= {old_n}")
    index.add(new.codes, new.ids, new.labels, new.paths)
    try:
        out = milvus_meta(index, source)
        out["created"] = meta.get("created") or out["created"]
        out["updated"] = now_iso()
        out["generation"] = int(meta.get("generation", 1)) + 1
        write_meta(tmp, out)
    except BaseException:
        index.client.delete(index.collection, filter=f"pos >= {old_n}")
        raise
