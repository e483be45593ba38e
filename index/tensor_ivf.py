r"""FAISS's binary inverted file (``IndexBinaryIVF``) searched on a torch device.

FAISS has no GPU binary IVF (``index_cpu_to_gpu`` refuses ``IndexBinaryIVF``); this
engine takes the IVF index of a bundle as FAISS built it — the binary quantizer's
centroids and the inverted lists — lays the lists out contiguously on the device (codes
as int32 words, ids, one offset per list) and answers what FAISS's CPU search answers for
the same ``nprobe``:

1. **Coarse step.** The ``nprobe`` nearest centroids of each query, by the ±1 matrix
   product of :mod:`fghash.eval.hamming_torch`, ordered by (distance, centroid number) —
   the order of FAISS's flat quantizer, which scans centroids in order and breaks ties by
   number; ``nprobe`` above ``nlist`` is refused, as :class:`index.binary.BinaryIndex`
   refuses it.
2. **Scan.** Every code of the probed lists is a candidate, in FAISS's scan order (probe
   rank, then position in the list); its Hamming distance is an XOR and a popcount on
   int32 words (at FAISS's stored width, whose zero padding adds nothing).
3. **Selection.** FAISS keeps a heap of ``k``: an item enters when it is strictly closer
   than the heap's worst, which then leaves — the worst by (distance, id). So every
   candidate closer than the ``k``-th distance ``T`` is kept; a candidate *at* ``T``
   enters when fewer than ``k`` candidates at ``≤ T`` were scanned before it, and of
   those that entered the smallest ids stay. Per-query histograms give ``T``, a running
   count gives who entered, and a sort by (distance, id) keeps the first ``k``.

**Results** equal FAISS CPU's for the same ``nprobe``: ``(D, I)`` int32 / int64, sorted by
distance, ties by ascending id (FAISS's final heap order); ids are those the lists store
(the bundle's positions). Where the probed lists hold fewer than ``k`` codes the row is
padded with ``I = -1``, ``D = MISSING_DISTANCE`` (int32 max), as FAISS pads it. ``k`` may
be anything up to ``ntotal``.

**Blocks.** Queries go in chunks for the coarse step (``_COARSE_BYTES`` a query and
centroid, plus the held probes), then in blocks whose candidates fit ``memory_bytes``
(:meth:`TensorIVF.scan_bytes`): ``_CAND_BYTES + 16·W`` bytes a candidate (``W`` int32 words
a code: the candidate and query rows, their gathered words, XOR and popcount temporaries,
the distance, its histogram key, the entry masks and running counts), ``_PICK_BYTES`` per
kept neighbour (at most ``2k`` a query: selection, sort key and order, the sort's
workspace), the histograms and the output. A block holds at least one query, so one
query's candidates (``nprobe`` lists) must fit the budget. Budget by default as for
:class:`index.tensor.TensorIndex`: half the free GPU memory once the lists are placed,
256 MiB on the CPU (the CPU path is for correctness tests).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from fghash.codes import nbytes_for
from fghash.errors import FghashError
from fghash.eval.hamming_torch import (
    database_operand,
    device_name,
    memory_budget,
    query_operand,
    torch_device,
)
from index.binary import MISSING_DISTANCE, check_k, ivf_lists
from index.padding import check_codes, pad_codes

if TYPE_CHECKING:
    import torch

__all__ = ["TensorIVF", "tensor_ivf_from_binary"]

logger = logging.getLogger(__name__)

_CAND_BYTES = 64  # per candidate beyond its words (module docstring)
_WORD_BYTES = 16  # per candidate and int32 word: gathered, query's, XOR, popcount step
_PICK_BYTES = 2 * 96  # per neighbour slot: up to 2k kept a query, each ~96 bytes at peak
_COARSE_BYTES = 32  # per query and centroid: the product, its int64 key, topk's workspace
_MAX_QUERY_BLOCK = 4096
_M1, _M2, _M4 = 0x55555555, 0x33333333, 0x0F0F0F0F


class TensorIVF:
    """A FAISS ``IndexBinaryIVF`` laid out on a torch device, searched as FAISS does.

    Attributes:
        bits, dim: the code length and FAISS's stored width (``kind`` ``"ivf"``,
            ``engine`` ``"tensor"``, ``device`` ``"cpu"`` or ``"gpu"``), ``nlist``,
            ``params`` (the bundle's, ``nprobe`` the default).

    Build it with :meth:`from_faiss`; ``memory_bytes`` and ``query_block`` (tests) size
    the blocks (module docstring).
    """

    kind = "ivf"
    engine = "tensor"

    def __init__(
        self,
        centroids: np.ndarray,
        codes: np.ndarray,
        ids: np.ndarray,
        sizes: np.ndarray,
        bits: int,
        *,
        params: dict[str, Any] | None = None,
        device: str = "auto",
        memory_bytes: int | None = None,
        query_block: int | None = None,
    ) -> None:
        import torch

        code_size = int(centroids.shape[1])
        self.bits, self.dim, self.nlist = int(bits), 8 * code_size, int(centroids.shape[0])
        self.params: dict[str, Any] = dict(params or {})
        self._dev = torch_device(device)
        self.device = device_name(self._dev)
        self._query_block = query_block
        self._cent = database_operand(centroids, self.dim, self._dev)
        self._words = torch.from_numpy(_as_words(codes)).to(self._dev)
        self._ids = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)).to(self._dev)
        sizes = np.asarray(sizes, dtype=np.int64)
        self._sizes_np = sizes
        self._sizes = torch.from_numpy(sizes).to(self._dev)
        self._offsets = torch.from_numpy(np.cumsum(sizes) - sizes).to(self._dev)
        self._id_span = int(ids.max()) + 2 if len(ids) else 2
        if _MAX_QUERY_BLOCK * (self.dim + 1) * self._id_span >= 1 << 63:
            raise FghashError("the ivf index's ids are too large for the tensor ivf engine.")
        self._memory = memory_budget(self._dev, memory_bytes)
        logger.info(
            "tensor ivf engine: %d codes of %d bits in %d lists on %s",
            self.ntotal,
            self.bits,
            self.nlist,
            self._dev,
        )

    @classmethod
    def from_faiss(
        cls, ivf_index: Any, bits: int, params: dict[str, Any] | None = None, device: str = "auto",
        **kw: Any,
    ) -> TensorIVF:  # fmt: skip
        """Read a FAISS ``IndexBinaryIVF`` (centroids of its flat binary quantizer, every
        inverted list's codes and ids) into a :class:`TensorIVF` on ``device``."""
        import faiss

        ivf = faiss.downcast_IndexBinary(ivf_index)
        if not isinstance(ivf, faiss.IndexBinaryIVF):
            raise FghashError(f"expected a FAISS IndexBinaryIVF, got {type(ivf).__name__}.")
        q = faiss.downcast_IndexBinary(ivf.quantizer)
        cs = int(ivf.code_size)
        if not hasattr(q, "xb"):
            raise FghashError("the ivf index's quantizer is not a flat binary index.")
        cent = faiss.vector_to_array(q.xb).reshape(int(q.ntotal), cs)
        sizes = np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        codes = np.empty((int(starts[-1]), cs), dtype=np.uint8)  # one copy, filled list by list
        ids = np.empty(int(starts[-1]), dtype=np.int64)
        for lst, list_ids, list_codes in ivf_lists(ivf):
            at = int(starts[lst])
            codes[at : at + list_ids.size] = list_codes
            ids[at : at + list_ids.size] = list_ids
        p = {"nlist": int(ivf.nlist), "nprobe": int(ivf.nprobe), **(params or {})}
        return cls(cent, codes, ids, sizes, bits, params=p, device=device, **kw)

    @property
    def ntotal(self) -> int:
        """Number of database items."""
        return int(self._ids.shape[0])

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
            f"TensorIVF(bits={self.bits}, ntotal={self.ntotal}, nlist={self.nlist}, "
            f"device={self.device!r})"
        )

    def scan_bytes(self, queries: int, candidates: int, k: int) -> int:
        """Bytes a block of ``queries`` with ``candidates`` codes in their lists allocates
        (the module docstring's accounting)."""
        w = self._words.shape[1]
        hists = 8 * 4 * queries * (self.dim + 1)
        return candidates * (_CAND_BYTES + _WORD_BYTES * w) + queries * k * _PICK_BYTES + hists

    def blocks(
        self, counts: np.ndarray, k: int, budget: int | None = None
    ) -> list[tuple[int, int]]:
        """``[start, end)`` query blocks whose :meth:`scan_bytes` fit the budget (at least
        one query each), given each query's candidate count ``counts``."""
        budget = self._memory if budget is None else budget
        cap = self._query_block or _MAX_QUERY_BLOCK
        out, s, n = [], 0, len(counts)
        cum = np.concatenate([[0], np.cumsum(counts)])
        while s < n:
            e = s + 1
            lo, hi = e, min(n, s + cap)
            while lo < hi:  # the largest block that fits
                mid = (lo + hi + 1) // 2
                fits = self.scan_bytes(mid - s, int(cum[mid] - cum[s]), k) <= budget
                lo, hi = (mid, hi) if fits else (lo, mid - 1)
            e = lo
            out.append((s, e))
            s = e
        return out

    def search(
        self,
        xq: np.ndarray,
        k: int,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        nflip: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """k nearest items of each query among the codes of its ``nprobe`` nearest lists
        (default: the bundle's ``nprobe``), exactly as FAISS's CPU ``IndexBinaryIVF``.

        Returns ``(D, I)``: int32 distances and int64 ids ``[nq, k]``, nearest first, ties
        by ascending id; ``I = -1``, ``D = MISSING_DISTANCE`` past the candidates found.
        """
        for name, value in (("ef-search", ef_search), ("nflip", nflip)):
            if value is not None:
                raise FghashError(f"{name} does not apply to an ivf index.")
        nprobe = self._nprobe(nprobe)
        q = pad_codes(check_codes(np.asarray(xq), self.bits, "query codes"), self.bits, self.dim)
        k = check_k(k, self.ntotal)
        nq = q.shape[0]
        D = np.full((nq, k), MISSING_DISTANCE, dtype=np.int32)
        I = np.full((nq, k), -1, dtype=np.int64)
        per_query = nprobe * (self.nlist * _COARSE_BYTES + 32)
        chunk = max(1, min(nq, self._memory // 2 // per_query)) if nq else 1
        budget = max(1, self._memory - chunk * nprobe * 16)
        for c in range(0, nq, chunk):
            qc = q[c : c + chunk]
            probes = self._coarse(qc, nprobe)
            counts = self._sizes[probes].sum(dim=1).cpu().numpy()
            qwords = self._query_words(qc)
            for s, e in self.blocks(counts, k, budget):
                Dt, It = self._scan(qwords[s:e], probes[s:e], k)
                D[c + s : c + e] = Dt.cpu().numpy()
                I[c + s : c + e] = It.cpu().numpy()
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
        """Every item of the probed lists within Hamming distance ``radius`` of each query
        (at most ``max_results``, nearest first): the k-NN of :meth:`search` with
        ``k = max_results + 1``, hits beyond ``radius`` dropped (:func:`index.radius.from_knn`)."""
        from index.radius import check_max_results, check_radius, from_knn

        if ef_search is not None or nflip is not None:
            raise FghashError("ef-search and nflip do not apply to an ivf index.")
        radius, max_results = check_radius(radius), check_max_results(max_results)
        q = check_codes(np.asarray(xq), self.bits, "query codes")
        nprobe = self._nprobe(nprobe)
        knn = lambda x, k: self.search(x, k, nprobe=nprobe)  # noqa: E731
        return from_knn(knn, q, radius, max_results, self.ntotal)

    def _nprobe(self, nprobe: Any) -> int:
        if nprobe is None:
            nprobe = self.params.get("nprobe", 1)
        if isinstance(nprobe, bool) or not isinstance(nprobe, (int, np.integer)) or nprobe < 1:
            raise FghashError(f"nprobe must be an integer >= 1, got {nprobe!r}.")
        if nprobe > self.nlist:  # as index.binary.BinaryIndex says it
            raise FghashError(
                f"--nprobe {nprobe} is more than the {self.nlist} lists of this ivf index; use "
                f"--nprobe {self.nlist} or less ({self.nlist} visits every list: exact search)."
            )
        return int(nprobe)

    def _query_words(self, q: np.ndarray) -> torch.Tensor:
        import torch

        return torch.from_numpy(_as_words(q)).to(self._dev)

    def _coarse(self, q: np.ndarray, nprobe: int) -> torch.Tensor:
        """``[nq, nprobe]`` list numbers, nearest first, ties by list number."""
        import torch

        d = query_operand(q, self.dim, self._dev) @ self._cent.T
        key = d.to(torch.int64) * self.nlist
        del d
        key += torch.arange(self.nlist, device=self._dev)
        return torch.topk(key, nprobe, dim=1, largest=False, sorted=True).indices % self.nlist

    def _scan(
        self, qwords: torch.Tensor, probes: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """FAISS's heap selection (module docstring, step 3) for one block of queries."""
        import torch

        rows, nbins = qwords.shape[0], self.dim + 1
        dev = self._dev
        lens, offs = self._sizes[probes].reshape(-1), self._offsets[probes].reshape(-1)
        total = int(lens.sum())
        pair_row = torch.arange(rows, device=dev).repeat_interleave(probes.shape[1])
        start = torch.cumsum(lens, 0) - lens
        row = pair_row.repeat_interleave(lens, output_size=total)
        cand = torch.arange(total, device=dev)
        cand += (offs - start).repeat_interleave(lens, output_size=total)
        dist = _popcount(self._words[cand] ^ qwords[row])
        hist = torch.bincount(row * nbins + dist, minlength=rows * nbins).view(rows, nbins)
        cum = hist.cumsum(dim=1)
        T = (cum < k).sum(dim=1)  # the k-th distance; nbins when fewer than k candidates
        del hist, cum
        Tr = T[row]
        le = dist <= Tr
        base = torch.zeros(rows, dtype=torch.int64, device=dev).index_add_(0, row, le.long())
        before = torch.cumsum(le, 0) - le.long() - (torch.cumsum(base, 0) - base)[row]
        keep = (dist < Tr) | ((dist == Tr) & (before < k))
        del le, before, Tr
        idx = torch.nonzero(keep).squeeze(1)
        r, d, ids = row[idx], dist[idx], self._ids[cand[idx]]
        del keep, idx, row, cand, dist
        order = torch.sort((r * nbins + d) * self._id_span + ids).indices
        r, d, ids = r[order], d[order], ids[order]
        n = torch.bincount(r, minlength=rows)
        rank = torch.arange(r.numel(), device=dev) - (torch.cumsum(n, 0) - n)[r]
        sel = rank < k
        D = torch.full((rows, k), MISSING_DISTANCE, dtype=torch.int32, device=dev)
        I = torch.full((rows, k), -1, dtype=torch.int64, device=dev)
        D[r[sel], rank[sel]] = d[sel].to(torch.int32)
        I[r[sel], rank[sel]] = ids[sel]
        return D, I


def _as_words(codes: np.ndarray) -> np.ndarray:
    """Packed codes as int32 words ``[n, ceil(bytes/4)]``, zero-padded (adds nothing)."""
    c = np.ascontiguousarray(codes, dtype=np.uint8)
    pad = -c.shape[1] % 4
    if pad:
        c = np.concatenate([c, np.zeros((c.shape[0], pad), dtype=np.uint8)], axis=1)
    return np.ascontiguousarray(c).view("<i4")


def _popcount(x: torch.Tensor) -> torch.Tensor:
    """Bits set per row of int32 words ``[n, W]``, int64 ``[n]`` (SWAR; the masks drop
    the bits an arithmetic shift copies in)."""
    x = x - ((x >> 1) & _M1)
    x = (x & _M2) + ((x >> 2) & _M2)
    x = (x + (x >> 4)) & _M4
    x = (x * 0x01010101) >> 24
    return x.sum(dim=1)


def tensor_ivf_from_binary(index: Any, *, device: str = "auto", **kw: Any) -> TensorIVF:
    """A :class:`TensorIVF` over an ivf :class:`index.binary.BinaryIndex` (e.g. one loaded
    from a bundle), with the bundle's parameters (its ``nprobe`` the default)."""
    if index.kind != "ivf":
        raise FghashError(
            f"the tensor ivf engine searches ivf indexes; this one is {index.kind!r}."
        )
    return TensorIVF.from_faiss(index.cpu_index(), index.bits, index.params, device, **kw)
