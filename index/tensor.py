r"""Exact Hamming k-NN on a torch device: ±1 matrix products and counting selection.

The tensor engine (``fghash search --engine tensor``) answers exactly what FAISS's flat
index answers — the ``k`` smallest Hamming distances, ties in ascending database
position, ``(D, I)`` as int32 / int64 — for any ``k`` up to the database size.

**Distances.** One matrix product per (query block, database block) gives the exact
distance matrix: ``[-u/2, 1/2] · [x, b]`` in fp16 on CUDA (tensor cores), float32 on
the CPU; why every value is exact is argued in :mod:`fghash.eval.hamming_torch`.

**Counting selection.** Distances take only ``b + 1`` values, so selection counts
instead of sorting (as FAISS's CPU flat search does with its counting heap):

1. per query, a histogram ``n[t]`` of the distances over the whole database
   (:func:`fghash.eval.hamming_torch.row_counts`, block by block);
2. the ``k``-th distance is the first ``t*`` with ``Σ_{t ≤ t*} n[t] ≥ k``; all
   ``below = Σ_{t < t*} n[t]`` items closer than it belong to the answer, and so do the
   first ``k - below`` items *at* ``t*`` in database order;
3. one more pass over the database (products recomputed: they are cheap next to
   selection) gathers exactly those ``k`` items, taking the items at ``t*`` block by
   block in position order until each query's quota is spent;
4. a stable sort of the ``k`` gathered items per query by distance — they were gathered
   in ascending position — gives FAISS's CPU order: by distance, ties by position.

**One-pass variant** (``selection="stream"``): the first database block is selected by
counting; each later block offers only items strictly closer than the running ``k``-th
distance, merged by a stable sort. Same answer, one pass and no recomputed products;
``bench/scripts/bench_gpu_search.py`` measures which variant is faster on a GPU.

**Blocks.** Query and database blocks are sized so that everything one query block
allocates fits ``memory_bytes`` (:meth:`TensorIndex.block_bytes`): by default half the
memory a CUDA device has free once the database operand is placed (that operand is
``K·s`` bytes a code, ``s`` the operand's item size, about 18× the packed codes), on the
CPU 256 MiB. For ``q`` queries, ``n`` database columns and ``k`` neighbours:

* per distance ``2s + 6`` bytes at the peak of the gather pass: the distance, the rows
  of a block whose ties only partly fit (a copy), their tie mask (1), its running count
  (int32, 4) and the kept mask (1); the histogram pass needs less (``s + 4``);
* per neighbour 64 bytes (``count``: gathered row, position and distance, int64; their
  concatenation; sort key, sorted values and order, the sort's workspace) or 224
  (``stream``: the kept ``k`` and a block's at most ``k`` offers, merged, sorted and
  trimmed); ``stream`` selects a block by counting when it offers more than that;
* the histograms, int64 ``[q, b + 1]``: one per database block (kept for the gather
  pass), their running sum, its cumulative sum and a spare;
* the query operand and its unpacking, ``K·(5s + 2)`` bytes a query.

The CPU path exists for correctness tests; for speed on a CPU use the FAISS engine.

**Engines.** :func:`pick_engine` documents which engine ``fghash search`` uses.
torch is imported only inside this module's functions and only when the tensor engine
is chosen; the FAISS paths never import it.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from fghash.codes import nbytes_for
from fghash.errors import FghashError
from fghash.eval.hamming_torch import (
    database_operand,
    device_name,
    memory_budget,
    query_operand,
    row_counts,
    torch_device,
)
from index.binary import check_k
from index.gpu import GPU_MAX_K, faiss_device_name, gpu_available
from index.padding import check_codes

if TYPE_CHECKING:
    import torch

__all__ = ["ENGINES", "SELECTIONS", "TensorIndex", "tensor_from_binary", "pick_engine"]

logger = logging.getLogger(__name__)

ENGINES = ("auto", "faiss", "tensor")
SELECTIONS = ("count", "stream")
# Working bytes per distance beyond two copies of it, per neighbour, and histograms held
# per database block beyond one (the module docstring's accounting).
_PAIR_EXTRA = 6
_GATHER_BYTES = {"count": 64, "stream": 224}
_SPARE_HISTS = 3
_MAX_QUERY_BLOCK = 4096
# Distances per block at most: torch's nonzero and bincount index with 32-bit ints on
# some versions and devices.
_MAX_BLOCK_ELEMS = 1 << 30


class TensorIndex:
    """Exact Hamming k-NN over packed codes, held on a torch device.

    Attributes:
        bits: code length; ``dim`` equals it (the engine reads bits, so FAISS's byte
            padding does not apply), ``kind`` is ``"flat"`` (exact), ``device`` is
            ``"cpu"`` or ``"gpu"`` and ``engine`` is ``"tensor"``.

    Args:
        xb: uint8 ``[N, ceil(bits/8)]`` packed database codes (little bit order).
        bits: code length, 1..1024.
        device: ``"cpu"``, ``"gpu"``/``"cuda"`` or ``"auto"`` (CUDA when torch sees one).
        memory_bytes: working memory for blocks (default: see the module docstring).
        count_method: how histograms are counted (:data:`fghash.eval.hamming_torch.COUNT_METHODS`).
        selection: ``"count"`` (two passes, the module docstring) or ``"stream"`` (one
            pass; :meth:`_stream_block`). Same results; which is faster on a GPU is
            what ``bench/scripts/bench_gpu_search.py`` measures.
        query_block, db_block: force block sizes (tests; default: from the memory).
    """

    kind = "flat"
    engine = "tensor"

    def __init__(
        self,
        xb: np.ndarray,
        bits: int,
        *,
        device: str = "auto",
        memory_bytes: int | None = None,
        count_method: str = "bincount",
        selection: str = "count",
        query_block: int | None = None,
        db_block: int | None = None,
    ) -> None:
        codes = check_codes(xb, bits, "database codes")
        if codes.shape[0] == 0:
            raise FghashError("the database is empty; an index needs at least one item.")
        self.bits = int(bits)
        self.dim = self.bits
        if selection not in SELECTIONS:
            raise FghashError(
                f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}."
            )
        self.params: dict[str, Any] = {"count_method": count_method, "selection": selection}
        self._selection = selection
        self._dev = torch_device(device)
        self.device = device_name(self._dev)
        self._count_method = count_method
        self._query_block = query_block
        self._db_block = db_block
        self._xb = database_operand(codes, self.bits, self._dev)
        self._memory = memory_budget(self._dev, memory_bytes)  # what is free after _xb
        logger.info(
            "tensor engine: %d codes of %d bits on %s (%s)",
            self.ntotal,
            self.bits,
            self._dev,
            str(self._xb.dtype).replace("torch.", ""),
        )

    @property
    def ntotal(self) -> int:
        """Number of database items."""
        return int(self._xb.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes per code as the user passes them, ``ceil(bits / 8)``."""
        return nbytes_for(self.bits)

    @property
    def padded(self) -> bool:
        """Always False: the engine works on the bits themselves."""
        return False

    def __repr__(self) -> str:
        return f"TensorIndex(bits={self.bits}, ntotal={self.ntotal}, device={self.device!r})"

    def block_bytes(self, qb: int, nb: int, k: int) -> int:
        """Bytes one query block of ``qb`` queries allocates with database blocks of
        ``nb`` items and ``k`` neighbours (the accounting of the module docstring)."""
        s = self._xb.element_size()
        pairs = qb * nb * (2 * s + _PAIR_EXTRA)
        gather = qb * k * _GATHER_BYTES[self._selection]
        n_blocks = -(-self.ntotal // nb) if self._selection == "count" else 1
        hists = 8 * qb * (self.bits + 1) * (n_blocks + _SPARE_HISTS)
        query = qb * self._xb.shape[1] * (5 * s + 2)
        return pairs + gather + hists + query

    def blocks(self, nq: int, k: int) -> tuple[int, int]:
        """``(query block, database block)`` sizes for ``nq`` queries and ``k``: the
        neighbours get at most a quarter of the memory, the distances what is left
        (:meth:`block_bytes` ≤ the memory, down to blocks of one)."""
        n, mem = self.ntotal, self._memory
        pair = 2 * self._xb.element_size() + _PAIR_EXTRA
        # Histograms grow as database blocks shrink: a query costs least at nb*.
        hist = 8 * (self.bits + 1) if self._selection == "count" else 0
        nb_star = max(1, min(n, math.isqrt(hist * n // pair)))
        gather = k * _GATHER_BYTES[self._selection]
        qb = self._query_block or min(
            _MAX_QUERY_BLOCK, (mem // 4) // gather, mem // self.block_bytes(1, nb_star, k)
        )
        qb = max(1, min(qb, nq))
        if self._db_block:
            return qb, self._db_block
        lo, hi = nb_star, max(nb_star, min(n, _MAX_BLOCK_ELEMS // qb))
        while lo < hi:  # the largest block that fits (the cost rises from nb* on)
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if self.block_bytes(qb, mid, k) <= mem else (lo, mid - 1)
        return qb, lo

    def search(
        self,
        xq: np.ndarray,
        k: int,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        nflip: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """k nearest database items of each query, exactly as ``IndexBinaryFlat`` on CPU.

        Args:
            xq: uint8 ``[nq, ceil(bits/8)]`` packed query codes.
            k: neighbours per query, ``1 <= k <= ntotal``.
            nprobe, ef_search, nflip: not used by an exact flat search; giving one is an
                error, as for FAISS's flat index.

        Returns:
            ``(D, I)``: int32 distances and int64 database positions, ``[nq, k]``,
            nearest first, ties by ascending position.
        """
        for name, value in (("nprobe", nprobe), ("ef-search", ef_search), ("nflip", nflip)):
            if value is not None:
                raise FghashError(f"{name} does not apply to the exact tensor engine.")
        q = check_codes(np.asarray(xq), self.bits, "query codes")
        k = check_k(k, self.ntotal)
        nq = q.shape[0]
        D = np.empty((nq, k), dtype=np.int32)
        I = np.empty((nq, k), dtype=np.int64)
        if nq == 0:
            return D, I
        qb, nb = self.blocks(nq, k)
        from tqdm.auto import tqdm

        starts = range(0, nq, qb)
        for s in tqdm(
            starts, desc="search", unit="block", disable=None if len(starts) > 1 else True
        ):
            block = self._search_block if self._selection == "count" else self._stream_block
            Dt, It = block(q[s : s + qb], k, nb)
            D[s : s + qb] = Dt.cpu().numpy()
            I[s : s + qb] = It.cpu().numpy()
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
        """Every item within Hamming distance ``radius`` (``d <= radius``) of each query,
        as :meth:`index.binary.BinaryIndex.range_search` returns it for a flat index.

        The engine's exact k-NN with ``k = max_results + 1`` (blocks sized by the memory
        accounting above, so memory is bounded by ``max_results``, never by how many
        items lie within ``radius``), hits beyond ``radius`` dropped
        (:func:`index.radius.from_knn`): same items, same order as a flat index.
        """
        from index.radius import check_max_results, check_radius, from_knn

        for name, value in (("nprobe", nprobe), ("ef-search", ef_search), ("nflip", nflip)):
            if value is not None:
                raise FghashError(f"{name} does not apply to the exact tensor engine.")
        radius, max_results = check_radius(radius), check_max_results(max_results)
        q = check_codes(np.asarray(xq), self.bits, "query codes")
        return from_knn(self.search, q, radius, max_results, self.ntotal)

    def _distances(self, qop: torch.Tensor, start: int, nb: int) -> torch.Tensor:
        return qop @ self._xb[start : start + nb].T

    def _search_block(
        self, q: np.ndarray, k: int, nb: int, distances: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Counting selection for one query block (module docstring, steps 1–4); with
        ``distances`` given, over those columns alone (positions from 0)."""
        import torch

        nbins = self.bits + 1
        qop = query_operand(q, self.bits, self._dev) if distances is None else None
        rows = q.shape[0]
        starts = range(0, self.ntotal, nb) if distances is None else range(1)
        cached = distances
        hists = []  # per database block: [rows, nbins]
        hist = None  # their sum, accumulated in place (a stack would double them)
        for s in starts:
            d = cached if cached is not None else self._distances(qop, s, nb)
            hists.append(row_counts(d, nbins, self._count_method))
            hist = hists[0].clone() if hist is None else hist.add_(hists[-1])
            if len(starts) == 1:
                cached = d
            del d  # the next block's product is not made while this one is held
        cum = hist.cumsum(dim=1)
        kth = (cum < k).sum(dim=1, keepdim=True)  # first t with cum[t] >= k
        quota = k - (cum.gather(1, kth) - hist.gather(1, kth))  # items to take at t = kth
        got_row, got_pos, got_d = [], [], []
        for s, h in zip(starts, hists, strict=True):
            d = cached if cached is not None else self._distances(qop, s, nb)
            ties = h.gather(1, kth)
            # One comparison per distance: rows whose ties here all fit their quota take
            # d <= kth, the others d < kth; rows that can take only some ties (at most one
            # block per row) get the first `quota` of them in position order.
            thr = torch.where(ties <= quota, kth, kth - 1).to(d.dtype)
            r, c = torch.nonzero(d <= thr, as_tuple=True)
            got_row.append(r)
            got_pos.append(c + s)
            got_d.append(d[r, c].to(torch.int64))
            part = torch.nonzero(((ties > quota) & (quota > 0)).squeeze(1)).squeeze(1)
            if part.numel():
                r, c = self._first_ties(d, part, kth, quota)
                got_row.append(r)
                got_pos.append(c + s)
                got_d.append(kth[r, 0])
            quota -= torch.minimum(ties, quota)
            del d, r, c
        row, pos, dist = torch.cat(got_row), torch.cat(got_pos), torch.cat(got_d)
        del got_row, got_pos, got_d
        # Gathered by block, in ascending position within each row: a stable sort by
        # (row, distance) keeps ties in position order.
        order = torch.sort(row * nbins + dist, stable=True).indices
        if order.numel() != rows * k:  # the histogram guarantees exactly k per row
            raise RuntimeError(f"tensor engine gathered {order.numel()} items for {rows}×{k}")
        return dist[order].view(rows, k).to(torch.int32), pos[order].view(rows, k)

    def _stream_block(self, q: np.ndarray, k: int, nb: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One-pass selection for one query block: keep each query's best ``k`` so far.

        The first database block is selected by counting (its histogram gives its own
        ``k``-th distance, :meth:`_search_block`); every later block only offers items
        *strictly* closer than the current ``k``-th distance ``T`` — an item at ``T`` comes
        after ``k`` earlier items at ``≤ T`` in database order, so it can never enter —
        and those few are merged by a stable sort on (distance, position). ``T`` only
        falls, so after the first block little is gathered.
        """
        import torch

        nbins = self.bits + 1
        qop = query_operand(q, self.bits, self._dev)
        rows = qop.shape[0]
        kept: tuple[torch.Tensor, ...] = ()
        for s in range(0, self.ntotal, nb):
            d = self._distances(qop, s, nb)
            if not kept:
                kept = self._counted(q, k, nb, d, s)
                del d
                continue
            row, pos, dist = kept
            per_row = torch.bincount(row, minlength=rows)
            last = torch.cumsum(per_row, 0) - 1
            thr = torch.where(per_row >= k, dist[last], nbins)  # T; no bound while < k kept
            offered = d < thr[:, None].to(d.dtype)
            n_offered = int(offered.sum())
            if n_offered == 0:
                continue
            if n_offered <= rows * k:
                r, c = torch.nonzero(offered, as_tuple=True)
                new = (r, c + s, d[r, c].to(torch.int64))
                del r, c
            else:  # more than the neighbour budget holds: this block's own best k
                new = self._counted(q, k, nb, d, s)
            del offered, d
            row, pos, dist = (torch.cat([a, b]) for a, b in zip(kept, new, strict=True))
            del kept, new
            order = torch.sort(row * nbins + dist, stable=True).indices  # kept ones first in ties
            row, pos, dist = row[order], pos[order], dist[order]
            del order
            n = torch.bincount(row, minlength=rows)
            keep = torch.arange(row.numel(), device=row.device) - (torch.cumsum(n, 0) - n)[row] < k
            kept = (row[keep], pos[keep], dist[keep])
            del row, pos, dist, keep
        _, pos, dist = kept
        return dist.view(rows, k).to(torch.int32), pos.view(rows, k)

    def _counted(
        self, q: np.ndarray, k: int, nb: int, d: torch.Tensor, start: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(row, position, distance) of the best ``k`` (or all) items of one database block
        ``d`` starting at ``start``, per query, by counting selection."""
        import torch

        k1 = min(k, d.shape[1])
        dist, pos = self._search_block(q, k1, nb, distances=d)
        row = torch.arange(d.shape[0], device=d.device).repeat_interleave(k1)
        return row, pos.reshape(-1) + start, dist.reshape(-1).to(torch.int64)

    @staticmethod
    def _first_ties(
        d: torch.Tensor, part: torch.Tensor, kth: torch.Tensor, quota: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, column) of the first ``quota`` items at distance ``kth`` in rows ``part``.

        A running count of the ties along each row picks them, so memory stays a few bytes
        per distance however many ties a row has (duplicate codes make many).
        """
        import torch

        sub = d if part.numel() == d.shape[0] else d[part]
        ties = sub == kth[part].to(d.dtype)
        del sub
        keep = ties & (ties.cumsum(dim=1, dtype=torch.int32) <= quota[part].to(torch.int32))
        del ties
        r, c = torch.nonzero(keep, as_tuple=True)
        return part[r], c


def tensor_from_binary(index: Any, *, device: str = "auto", **kw: Any) -> TensorIndex:
    """A :class:`TensorIndex` over the codes of a flat :class:`index.binary.BinaryIndex`
    (e.g. one loaded from a bundle), or for an ivf one a :class:`index.tensor_ivf.TensorIVF`
    (same results as FAISS's CPU search); other kinds do not hold their codes in order."""
    import faiss

    if index.kind == "ivf":  # the inverted file on the device: index.tensor_ivf
        from index.tensor_ivf import tensor_ivf_from_binary

        return tensor_ivf_from_binary(index, device=device, **kw)  # type: ignore[return-value]
    if index.kind != "flat":
        raise FghashError(
            f"the tensor engine searches flat and ivf indexes only; this bundle is "
            f"{index.kind!r} (use --engine faiss, or build a flat or ivf bundle)."
        )
    fi = index.cpu_index()
    stored = faiss.vector_to_array(fi.xb).reshape(int(fi.ntotal), int(fi.code_size))
    return TensorIndex(stored[:, : index.nbytes], index.bits, device=device, **kw)


def pick_engine(engine: str, device: str, k: int, kind: str | None = None) -> tuple[str, str]:
    """Which engine and device ``fghash search`` uses: ``(engine, device)``.

    * ``faiss``: FAISS as before (``device`` as in :func:`index.gpu.resolve_faiss_device`).
    * ``tensor``: the tensor engine on ``device`` (``auto``: CUDA when torch sees a GPU).
      On ``cpu`` it is for checking correctness, not for speed.
    * ``auto`` (the default) with ``--device cpu`` or ``auto``: FAISS, and torch is never
      imported. With ``--device gpu``: the tensor engine where FAISS cannot serve the
      request — FAISS without GPU support, or ``k`` above ``GpuIndexBinaryFlat``'s 2048 —
      and ``GpuIndexBinaryFlat`` otherwise. The engine's GPU speed is not measured yet
      (``bench/scripts/bench_gpu_search.py``); once it is, this rule prefers it where it is faster.
      For an ivf bundle (``kind="ivf"``) with ``--device gpu`` always the tensor engine
      (:mod:`index.tensor_ivf`): FAISS has no GPU binary IVF.
    """
    if engine not in ENGINES:
        raise FghashError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}.")
    device = faiss_device_name(device)
    if engine == "auto":
        if device != "gpu":
            return "faiss", device
        if kind == "ivf":
            logger.info("engine auto: FAISS has no GPU ivf index; using the tensor ivf engine")
            return "tensor", "gpu"
        if k > GPU_MAX_K or not gpu_available():
            logger.info("engine auto: FAISS cannot serve this on the GPU; using the tensor engine")
            return "tensor", "gpu"
        return "faiss", "gpu"
    return engine, device
