"""Build and search FAISS binary indexes over packed fghash codes.

Vocabulary follows FAISS: database ``xb``, queries ``xq``, ``k`` neighbours, results
``(D, I)``. ``D`` holds Hamming distances ``d_H(q, x) = popcount(q ⊕ x)`` (int32) and
``I`` the *positions* 0..N-1 of the neighbours in the database the index was built from
(int64); :class:`index.items.ItemMeta` maps positions to the codes file's ids, labels
and paths.

Order within ties
-----------------
Hamming distances take only ``bits + 1`` values, so ties are the rule. The exact
indexes (``flat`` on CPU, and ``ivf`` when every list is probed) return equal-distance
neighbours in ascending database position, i.e. the same order as a stable sort of the
distance row. GPU flat search and the approximate indexes (``ivf`` with fewer probes,
``hnsw``, ``hash``, ``multihash``) make no promise about the order within ties, and
when k cuts through a tie *which* of the tied items are returned is arbitrary too.
Compare results tie-aware (distances row-wise, ids only below the k-th distance).

Missing results
---------------
The hash indexes only look at buckets within ``nflip`` bit flips of the query, so they
may find fewer than ``k`` items; the missing slots hold ``I = -1`` and
``D = MISSING_DISTANCE`` (int32 max), as FAISS returns them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fghash.codes import nbytes_for
from fghash.errors import FghashError
from index.gpu import GPU_MAX_K, faiss_device_name, resolve_faiss_device, to_cpu, to_gpu
from index.padding import check_codes, fast_dim, pad_codes

__all__ = [
    "KINDS",
    "MIN_POINTS_PER_CENTROID",
    "MISSING_DISTANCE",
    "BinaryIndex",
    "build_index",
    "default_nlist",
    "default_hash_params",
    "ivf_lists",
    "wrap_faiss_index",
]

logger = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("flat", "ivf", "hnsw", "hash", "multihash")
#: FAISS warns when k-means gets fewer training points than this per centroid; fghash
#: refuses instead (an IVF trained on fewer is no better than a flat index).
MIN_POINTS_PER_CENTROID = 39
MISSING_DISTANCE = int(np.iinfo(np.int32).max)
# Queries per FAISS call: big enough to keep all threads busy, small enough for a
# progress bar that moves.
_QUERY_BLOCK = 8192
# Queries per FAISS range_search call (its results for a block are held at once).
_RANGE_QUERY_BLOCK = 256
_ADD_BLOCK = 1 << 18
# Default search-time parameters (FAISS's own defaults are 1 / 16 / 0, too timid).
_DEFAULT_NPROBE = 16
_DEFAULT_EF_SEARCH = 64
_DEFAULT_EF_CONSTRUCTION = 40
_DEFAULT_NFLIP = {"hash": 2, "multihash": 1}
# What each search-time option applies to.
_SEARCH_OPTION_KIND = {"nprobe": ("ivf",), "ef_search": ("hnsw",), "nflip": ("hash", "multihash")}


def default_nlist(n: int) -> int:
    """Default number of IVF lists for ``n`` database items.

    ``round(sqrt(n))``, capped so that every list gets at least
    :data:`MIN_POINTS_PER_CENTROID` (39) training points: ``min(round(sqrt n), n // 39)``.
    Fewer than 39 items cannot train even one list: :class:`FghashError`.
    """
    if n < MIN_POINTS_PER_CENTROID:
        raise FghashError(
            f"an ivf index needs at least {MIN_POINTS_PER_CENTROID} database items to train "
            f"its k-means, got {n}; use --type flat for a database this small."
        )
    return max(1, min(int(round(math.sqrt(n))), n // MIN_POINTS_PER_CENTROID))


def default_hash_params(bits: int, n: int, kind: str) -> tuple[int, int]:
    """Default ``(b, nhash)`` for the ``hash`` and ``multihash`` kinds.

    ``b = ceil(log2 n)`` bits per hash table (about one item per bucket), at most 64
    (FAISS hashes into a 64-bit key) and at most ``bits``. ``hash`` uses one table of
    the first ``b`` bits. ``multihash`` is multi-index hashing (Norouzi et al., CVPR
    2012): the code is cut into ``nhash = bits // b`` disjoint substrings of ``b`` bits,
    with ``b`` at most ``bits // 2`` so that there are at least two.
    """
    b = max(1, min(64, bits, math.ceil(math.log2(max(n, 2)))))
    if kind == "hash":
        return b, 1
    if bits >= 2:
        b = min(b, bits // 2)
    return b, max(1, bits // b)


@dataclass(eq=False)
class BinaryIndex:
    """One FAISS binary index over ``bits``-bit codes, stored ``dim`` bits wide.

    Attributes:
        faiss_index: the FAISS object (``IndexBinaryFlat``, ``IndexBinaryIVF``,
            ``IndexBinaryHNSW``, ``IndexBinaryHash``, ``IndexBinaryMultiHash`` or
            ``GpuIndexBinaryFlat``).
        bits: code length the user works with.
        dim: width FAISS sees, ``bits`` zero-padded (see :mod:`index.padding`).
        kind: one of :data:`KINDS`.
        device: ``"cpu"`` or ``"gpu"``.
        params: build and default search parameters (nlist, nprobe, hnsw_m, ...).

    Search results and their order within ties are described in :mod:`index.binary`.
    """

    faiss_index: Any
    bits: int
    dim: int
    kind: str
    device: str = "cpu"
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def ntotal(self) -> int:
        """Number of database items."""
        return int(self.faiss_index.ntotal)

    @property
    def nbytes(self) -> int:
        """Bytes per code as the user passes them, ``ceil(bits / 8)``."""
        return nbytes_for(self.bits)

    @property
    def padded(self) -> bool:
        """True when FAISS stores the codes wider than ``ceil(bits/8)`` bytes."""
        return self.dim > 8 * self.nbytes

    def __repr__(self) -> str:
        return (
            f"BinaryIndex(kind={self.kind!r}, bits={self.bits}, dim={self.dim}, "
            f"ntotal={self.ntotal}, device={self.device!r}, params={self.params})"
        )

    def cpu_index(self) -> Any:
        """The FAISS index on CPU (a copy when this one lives on the GPU)."""
        return to_cpu(self.faiss_index)

    def search(
        self,
        xq: np.ndarray,
        k: int,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        nflip: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """k nearest database items of each query by Hamming distance.

        Args:
            xq: uint8 ``[nq, ceil(bits/8)]`` packed query codes (same bit order as the
                database; unused high bits 0).
            k: neighbours per query, ``1 <= k <= ntotal`` (and ``<= 2048`` on GPU).
            nprobe: ``ivf`` only: lists to visit (default from ``params``).
            ef_search: ``hnsw`` only: size of the search beam (default from ``params``).
            nflip: ``hash``/``multihash`` only: bit flips explored around each bucket.

        Returns:
            ``(D, I)``: int32 distances and int64 database positions, both ``[nq, k]``,
            nearest first; ``I = -1`` (and ``D = MISSING_DISTANCE``) where fewer than
            ``k`` items were found. Order within ties: see :mod:`index.binary`.

        Search-time overrides are set on the FAISS object for the call and restored
        afterwards, so concurrent searches on one index must not pass different ones.
        """
        q = self._check_queries(xq)
        k = self._check_k(k)
        self._check_overrides(nprobe, ef_search, nflip)
        q = pad_codes(q, self.bits, self.dim)
        nq = q.shape[0]
        D = np.empty((nq, k), dtype=np.int32)
        I = np.empty((nq, k), dtype=np.int64)
        with _SearchParams(self, nprobe, ef_search, nflip):
            from tqdm.auto import tqdm

            starts = range(0, nq, _QUERY_BLOCK)
            for s in tqdm(
                starts, desc="search", unit="block", disable=None if nq > _QUERY_BLOCK else True
            ):
                Db, Ib = self.faiss_index.search(q[s : s + _QUERY_BLOCK], k)
                D[s : s + _QUERY_BLOCK] = Db
                I[s : s + _QUERY_BLOCK] = Ib
        return D, I

    def range_search(
        self,
        xq: np.ndarray,
        radius: int,
        *,
        max_results: int | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        nflip: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every item within Hamming distance ``radius`` (``d <= radius``) of each query.

        Returns ``(lims, D, I, truncated)`` as :mod:`index.radius` describes: hits sorted
        by distance, ties by position, at most ``max_results`` per query (default
        :data:`index.radius.DEFAULT_MAX_RESULTS`). ``flat`` answers through its exact
        k-NN (on a CPU copy when the index lives on the GPU); ``ivf``, ``hash`` and
        ``multihash`` through FAISS's ``range_search`` within the lists (``nprobe``) or
        buckets (``nflip``) they visit; ``hnsw`` cannot search by radius.
        """
        from index.radius import check_max_results, check_radius, from_knn, from_ranges

        if self.kind == "hnsw":
            raise FghashError(
                "an hnsw index cannot search by radius (FAISS's IndexBinaryHNSW has no range "
                "search); search it with -k, or build a flat, ivf, hash or multihash bundle."
            )
        radius, max_results = check_radius(radius), check_max_results(max_results)
        q = self._check_queries(xq)
        self._check_overrides(nprobe, ef_search, nflip)
        q = pad_codes(q, self.bits, self.dim)
        if self.kind == "flat":
            fi = self.cpu_index()
            return from_knn(lambda x, k: fi.search(x, k), q, radius, max_results, self.ntotal)
        lims, D, I = [np.zeros(1, dtype=np.int64)], [], []
        with _SearchParams(self, nprobe, ef_search, nflip):
            for s in range(0, q.shape[0], _RANGE_QUERY_BLOCK):
                lb, Db, Ib = self.faiss_index.range_search(
                    q[s : s + _RANGE_QUERY_BLOCK], min(radius, self.dim) + 1
                )
                lims.append(lb[1:] + lims[-1][-1])
                D.append(Db)
                I.append(Ib)
        return from_ranges(
            np.concatenate(lims),
            np.concatenate(D) if D else np.empty(0, dtype=np.int32),
            np.concatenate(I) if I else np.empty(0, dtype=np.int64),
            radius,
            max_results,
        )

    def _check_overrides(self, nprobe: Any, ef_search: Any, nflip: Any) -> None:
        """Search-time options only on the kinds they apply to, and in range."""
        overrides = {"nprobe": nprobe, "ef_search": ef_search, "nflip": nflip}
        for name, value in overrides.items():
            if value is None:
                continue
            if self.kind not in _SEARCH_OPTION_KIND[name]:
                raise FghashError(
                    f"{name.replace('_', '-')} applies to {' and '.join(_SEARCH_OPTION_KIND[name])} "
                    f"indexes only; this index is {self.kind!r}."
                )
            _check_int(name, value, 0 if name == "nflip" else 1)
        nlist = int(getattr(self.faiss_index, "nlist", 0)) if self.kind == "ivf" else 0
        if nprobe is not None and nlist and nprobe > nlist:
            raise FghashError(
                f"--nprobe {nprobe} is more than the {nlist} lists of this ivf index; use "
                f"--nprobe {nlist} or less ({nlist} visits every list: exact search)."
            )

    def add(self, xb: np.ndarray) -> None:
        """Append packed codes (uint8 ``[n, ceil(bits/8)]``) after the current items.

        They take positions ``ntotal .. ntotal + n - 1``. An ``ivf`` index keeps its
        trained lists (new items go to their nearest centroid), so nothing is rebuilt.
        """
        codes = check_codes(xb, self.bits, "new codes")
        if codes.shape[0]:
            _add(self.faiss_index, pad_codes(codes, self.bits, self.dim))

    def reserve(self, n: int) -> None:
        """Make room for ``n`` items in all, so that adding blocks up to ``n`` never
        reallocates and copies the stored codes (flat CPU indexes; others ignore it)."""
        import faiss

        fi = self.faiss_index
        if type(fi) is faiss.IndexBinaryFlat and n > self.ntotal:
            size = self.ntotal * fi.code_size
            fi.xb.resize(int(n) * fi.code_size)  # std::vector keeps its capacity...
            fi.xb.resize(size)  # ...when it shrinks back to the items it holds

    def _check_queries(self, xq: np.ndarray) -> np.ndarray:
        q = np.asarray(xq)
        if q.ndim == 2 and q.dtype == np.uint8 and q.shape[1] != self.nbytes:
            raise FghashError(
                f"query codes have {q.shape[1] * 8} bits ({q.shape[1]} bytes) per item but the "
                f"index holds {self.bits}-bit codes ({self.nbytes} bytes); use queries "
                f"encoded with the same code length."
            )
        return check_codes(q, self.bits, "query codes")

    def _check_k(self, k: int) -> int:
        return check_k(k, self.ntotal, gpu=self.device == "gpu")


def check_k(k: Any, ntotal: int, *, gpu: bool = False) -> int:
    """``k`` as an int in ``1..ntotal`` (``..GPU_MAX_K`` for FAISS on a GPU), or one sentence."""
    k = _check_int("k", k, 1)
    if k > ntotal:
        raise FghashError(f"k={k} is larger than the database ({ntotal} items); use k <= {ntotal}.")
    if gpu and k > GPU_MAX_K:
        raise FghashError(
            f"k={k} is above the GPU limit of {GPU_MAX_K}; use a smaller k or --device cpu."
        )
    return k


class _SearchParams:
    """Set search-time parameters on the FAISS object and restore them afterwards."""

    def __init__(self, index: BinaryIndex, nprobe: Any, ef_search: Any, nflip: Any) -> None:
        self.fi = index.faiss_index
        self.kind = index.kind
        self.values = {"nprobe": nprobe, "ef_search": ef_search, "nflip": nflip}
        self.saved: dict[str, int] = {}

    def _attr(self, name: str) -> tuple[Any, str]:
        if name == "ef_search":
            return self.fi.hnsw, "efSearch"
        return self.fi, name

    def __enter__(self) -> _SearchParams:
        for name, value in self.values.items():
            if value is None:
                continue
            obj, attr = self._attr(name)
            self.saved[name] = getattr(obj, attr)
            if name == "nprobe" and value > self.fi.nlist:
                logger.info("nprobe=%d is above nlist=%d; probing all lists", value, self.fi.nlist)
                value = int(self.fi.nlist)
            setattr(obj, attr, int(value))
        return self

    def __exit__(self, *exc: Any) -> None:
        for name, value in self.saved.items():
            obj, attr = self._attr(name)
            setattr(obj, attr, value)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise FghashError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _kind_device(kind: str, device: str) -> str:
    if kind == "flat":
        return resolve_faiss_device(device)
    if faiss_device_name(device) == "gpu":
        logger.warning("FAISS has no GPU %s binary index; building it on the CPU", kind)
    else:
        resolve_faiss_device(device)  # validates the name
        logger.info("%s binary indexes run on the CPU", kind)
    return "cpu"


def build_index(
    xb: np.ndarray,
    bits: int,
    kind: str = "flat",
    *,
    nlist: int | None = None,
    hnsw_m: int = 32,
    hash_b: int | None = None,
    nhash: int | None = None,
    device: str = "auto",
    pad: bool = True,
    ef_construction: int = _DEFAULT_EF_CONSTRUCTION,
) -> BinaryIndex:
    """Build a binary index of ``kind`` over packed codes ``xb`` (uint8 ``[N, ceil(bits/8)]``).

    Kinds (:data:`KINDS`):
        ``flat``: ``IndexBinaryFlat``, exact; on GPU as ``GpuIndexBinaryFlat`` when
        ``device`` resolves to ``"gpu"`` (see :func:`index.gpu.resolve_faiss_device`).
        ``ivf``: ``IndexBinaryIVF`` with a flat coarse quantizer; ``nlist`` lists trained
        by binary k-means on the database itself (default :func:`default_nlist`), needs
        at least 39 items per list or raises :class:`FghashError`; default ``nprobe`` is
        ``min(16, nlist)``.
        ``hnsw``: ``IndexBinaryHNSW`` with ``hnsw_m`` links per node, ``efConstruction =
        ef_construction``, default ``efSearch`` 64.
        ``hash``: ``IndexBinaryHash`` on the first ``hash_b`` bits, default ``nflip`` 2.
        ``multihash``: ``IndexBinaryMultiHash`` with ``nhash`` tables of ``hash_b`` bits,
        default ``nflip`` 1. Defaults for ``hash_b``/``nhash``: :func:`default_hash_params`.
        All kinds but ``flat`` run on CPU whatever ``device`` says (a warning is logged
        when ``device="gpu"``).

    ``pad=True`` stores codes zero-padded to :func:`index.padding.fast_dim` bits (same
    distances, faster kernels); ``pad=False`` stores ``8 * ceil(bits/8)`` bits.
    """
    if kind not in KINDS:
        raise FghashError(f"unknown index type {kind!r}; choose one of {', '.join(KINDS)}.")
    bits = _check_int("bits", bits, 1)
    dim = fast_dim(bits) if pad else 8 * nbytes_for(bits)
    codes = check_codes(xb, bits, "database codes")
    n = codes.shape[0]
    if n == 0:
        raise FghashError("the database is empty; an index needs at least one item.")
    where = _kind_device(kind, device)
    xb_p = pad_codes(codes, bits, dim)
    import faiss

    params: dict[str, Any] = {}
    if kind == "flat":
        fi = faiss.IndexBinaryFlat(dim)
    elif kind == "ivf":
        fi, params = _trained_ivf(xb_p, dim, nlist)
    elif kind == "hnsw":
        fi, params = _empty_hnsw(dim, hnsw_m, ef_construction)
    else:
        fi, params = _empty_hash(kind, dim, bits, n, hash_b, nhash)
    _add(fi, xb_p)
    if where == "gpu":
        fi = to_gpu(fi)
    logger.debug("built %s index: %d items, %d bits stored as %d, on %s", kind, n, bits, dim, where)
    return BinaryIndex(fi, bits=bits, dim=dim, kind=kind, device=where, params=params)


def _trained_ivf(xb: np.ndarray, dim: int, nlist: int | None) -> tuple[Any, dict[str, Any]]:
    """An ``IndexBinaryIVF`` whose ``nlist`` lists are trained by binary k-means on ``xb``."""
    import faiss

    n = xb.shape[0]
    if nlist is None:
        nlist = default_nlist(n)
    nlist = _check_int("nlist", nlist, 1)
    if n < MIN_POINTS_PER_CENTROID * nlist:
        raise FghashError(
            f"an ivf index with nlist={nlist} needs at least "
            f"{MIN_POINTS_PER_CENTROID * nlist} database items ({MIN_POINTS_PER_CENTROID} "
            f"per list) but there are {n}; use --nlist {max(1, n // MIN_POINTS_PER_CENTROID)} "
            f"or less, or --type flat."
        )
    quantizer = faiss.IndexBinaryFlat(dim)
    fi = faiss.IndexBinaryIVF(quantizer, dim, nlist)
    fi.nprobe = min(_DEFAULT_NPROBE, nlist)
    logger.info("training ivf: binary k-means, %d lists on %d items", nlist, n)
    fi.train(xb)
    return fi, {"nlist": nlist, "nprobe": int(fi.nprobe)}


def _empty_hnsw(dim: int, hnsw_m: int, ef_construction: int) -> tuple[Any, dict[str, Any]]:
    """An empty ``IndexBinaryHNSW`` with ``hnsw_m`` links per node."""
    import faiss

    hnsw_m = _check_int("hnsw_m", hnsw_m, 2)
    ef_construction = _check_int("ef_construction", ef_construction, 1)
    fi = faiss.IndexBinaryHNSW(dim, hnsw_m)
    fi.hnsw.efConstruction = ef_construction
    fi.hnsw.efSearch = _DEFAULT_EF_SEARCH
    params = {"hnsw_m": hnsw_m, "ef_construction": ef_construction, "ef_search": _DEFAULT_EF_SEARCH}
    return fi, params


def _empty_hash(
    kind: str, dim: int, bits: int, n: int, hash_b: int | None, nhash: int | None
) -> tuple[Any, dict[str, Any]]:
    """An empty ``IndexBinaryHash`` (``kind="hash"``) or ``IndexBinaryMultiHash``; table
    sizes default to :func:`default_hash_params`."""
    import faiss

    b0, nh0 = default_hash_params(bits, n, kind)
    b = b0 if hash_b is None else _check_int("hash_b", hash_b, 1)
    if kind == "hash":
        if nhash not in (None, 1):
            raise FghashError("nhash applies to multihash indexes only.")
        nh = 1
    else:
        nh = (max(1, bits // b) if hash_b is not None else nh0) if nhash is None else nhash
        nh = _check_int("nhash", nh, 1)
    if b > min(64, bits) or b * nh > bits:
        raise FghashError(
            f"{kind} with {nh} table(s) of {b} bits does not fit {bits}-bit codes; "
            f"each table hashes at most 64 bits and together at most {bits}."
        )
    if kind == "hash":
        fi = faiss.IndexBinaryHash(dim, b)
    else:
        fi = faiss.IndexBinaryMultiHash(dim, nh, b)
    fi.nflip = _DEFAULT_NFLIP[kind]
    params = {"hash_b": b, "nflip": int(fi.nflip)}
    if kind == "multihash":
        params["nhash"] = nh
    return fi, params


def _add(fi: Any, xb: np.ndarray) -> None:
    from tqdm.auto import tqdm

    n = xb.shape[0]
    starts = range(0, n, _ADD_BLOCK)
    for s in tqdm(starts, desc="add", unit="block", disable=None if n > _ADD_BLOCK else True):
        fi.add(xb[s : s + _ADD_BLOCK])


def wrap_faiss_index(
    fi: Any, bits: int, params: dict[str, Any], device: str = "cpu"
) -> BinaryIndex:
    """Wrap a FAISS binary index read from disk, recovering its kind from its class."""
    import faiss

    fi = faiss.downcast_IndexBinary(fi) if type(fi) is faiss.IndexBinary else fi
    by_class = [
        (faiss.IndexBinaryFlat, "flat"),
        (faiss.IndexBinaryIVF, "ivf"),
        (faiss.IndexBinaryHNSW, "hnsw"),
        (faiss.IndexBinaryHash, "hash"),
        (faiss.IndexBinaryMultiHash, "multihash"),
    ]
    kind = next((name for cls, name in by_class if isinstance(fi, cls)), None)
    if kind is None:
        raise FghashError(f"unsupported FAISS binary index class {type(fi).__name__}.")
    if nbytes_for(bits) * 8 > fi.d:
        raise FghashError(f"a {fi.d}-bit FAISS index cannot hold {bits}-bit codes.")
    if kind == "flat":
        device = resolve_faiss_device(device)
        if device == "gpu":
            fi = to_gpu(fi)
    else:
        device = _kind_device(kind, device)
    return BinaryIndex(
        fi, bits=int(bits), dim=int(fi.d), kind=kind, device=device, params=dict(params)
    )


def ivf_lists(ivf: Any) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(list number, ids, codes)`` of every non-empty inverted list of a FAISS
    ``IndexBinaryIVF``, copied out (ids int64 ``[n]``, codes uint8 ``[n, code_size]``)."""
    import faiss

    lists, cs = ivf.invlists, int(ivf.code_size)
    for lst in range(int(ivf.nlist)):
        n = int(lists.list_size(lst))
        if n:
            ids = faiss.rev_swig_ptr(lists.get_ids(lst), n).copy()
            codes = faiss.rev_swig_ptr(lists.get_codes(lst), n * cs).copy().reshape(n, cs)
            yield lst, ids, codes
