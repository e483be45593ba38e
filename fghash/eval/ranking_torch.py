r"""Hamming ranking on a torch device (a GPU, or the CPU for tests): :class:`RankingStats`.

Same contract as :func:`fghash.eval.ranking.rank_hamming` — the per-distance counts ``n``
and relevant counts ``r`` that every tie-aware metric is computed from
(:mod:`fghash.eval.metrics`), and with ``stable=True`` the stable ranking's AP@all and the
relevance of its first ``kmax`` items — computed with torch on ``device``.

Per query block (whole database rows at a time):

* distances ``d`` from one exact ±1 product (:mod:`fghash.eval.hamming_torch`);
* relevance ``rel`` (same label; multi-hot: at least one shared label);
* counts: one histogram per row of ``key = d + (b + 1)·rel`` over ``2(b + 1)`` bins,
  whose halves are the irrelevant and relevant counts per distance, so
  ``n = irr + r``;
* stable: a stable sort of each row by distance (ties by ascending database position,
  what ``np.argsort(d, kind="stable")`` and FAISS's flat CPU index give); a relevant
  item at rank ``i`` (from 1) that is the ``j``-th relevant one adds ``j / i`` to the
  AP, which is divided by ``R``.

torch is imported inside the functions; the caller picks the device (on the CPU the
numpy version, :func:`fghash.eval.ranking.rank_hamming`, is the one to use for speed).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from fghash.errors import FghashError
from fghash.eval.hamming_torch import (
    check_packed,
    database_operand,
    memory_budget,
    query_operand,
    row_counts,
    torch_device,
)
from fghash.eval.ranking import RankingStats

if TYPE_CHECKING:
    import torch

__all__ = ["block_rows", "rank_hamming_torch"]

logger = logging.getLogger(__name__)

# Working bytes per (query, database item) pair at the peak of a block (s: the product's
# item size, 4 at most). Counts: the product (s) and its int16 copy (2), then the int16
# distance, the relevance (1; multi-hot: its product, s, first), the int16 key and its
# int32 copy for the histogram (2 + 2 + 4). Stable ranking, worst case every pair
# relevant: the sort (int16 values 2, int64 order 8, a segmented sort's workspace of keys,
# order and segment ids 24) beside distance and relevance (3); then the sorted relevance
# (1), every relevant rank from nonzero (row and column, 16) and the AP terms (j, its and
# the rank's float64 copies, the quotient: 32).
_BYTES = 12
_STABLE_BYTES = 56
# Pairs per block at most (torch's sort and nonzero index with 32-bit ints on some versions).
_MAX_BLOCK_ELEMS = 1 << 30


def _labels(qlabels: Any, dblabels: Any, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    ql, dl = np.asarray(qlabels), np.asarray(dblabels)
    if ql.ndim != dl.ndim:
        raise FghashError(
            "query and database labels differ in form (single label vs multi-hot); "
            "use the same form in both splits."
        )
    if ql.ndim == 2 and ql.shape[1] != dl.shape[1]:
        raise FghashError(
            f"query labels have {ql.shape[1]} classes but database labels have {dl.shape[1]}."
        )
    if ql.ndim == 1:
        return torch.from_numpy(ql.astype(np.int64)).to(dev), torch.from_numpy(
            dl.astype(np.int64)
        ).to(dev)
    # multi-hot: a shared label makes the product positive, in any float precision
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    return (
        torch.from_numpy(ql.astype(np.float32)).to(dev, dtype),
        torch.from_numpy(dl.astype(np.float32)).to(dev, dtype),
    )


def _relevance(ql: torch.Tensor, dl: torch.Tensor) -> torch.Tensor:
    if ql.ndim == 1:
        return ql[:, None] == dl[None, :]
    return (ql @ dl.T) > 0


def _stable(d: torch.Tensor, rel: torch.Tensor, kmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """AP of the stable ranking and relevance of its first ``kmax`` items, per row."""
    import torch

    rows, n = d.shape
    order = torch.sort(d, dim=1, stable=True).indices
    rel_sorted = rel.gather(1, order)
    del order
    r, c = torch.nonzero(rel_sorted, as_tuple=True)  # row-major: rank order per row
    hits = torch.bincount(r, minlength=rows)
    first = torch.cumsum(hits, 0) - hits
    j = torch.arange(r.numel(), device=d.device) - first[r] + 1  # j-th relevant of its row
    ap = torch.zeros(rows, dtype=torch.float64, device=d.device)
    ap.index_add_(0, r, j.to(torch.float64) / (c + 1).to(torch.float64))
    del j, c
    ap = torch.where(hits > 0, ap / hits.clamp(min=1), ap)
    top = torch.zeros((rows, kmax), dtype=torch.bool, device=d.device)
    w = min(kmax, n)
    top[:, :w] = rel_sorted[:, :w]
    return ap, top


def block_rows(memory: int, nq: int, n_db: int, width: int, *, stable: bool) -> int:
    """Queries per block so that one block's working memory fits ``memory`` bytes: per
    database item :data:`_STABLE_BYTES` or :data:`_BYTES` (the comment there), per query
    its operand row and unpacking (``width`` values of at most 4 bytes, ``5·4 + 2`` a value)."""
    per_row = max(1, n_db) * (_STABLE_BYTES if stable else _BYTES) + width * 22
    return max(1, min(nq, memory // per_row, _MAX_BLOCK_ELEMS // max(1, n_db)))


def rank_hamming_torch(
    qcodes: np.ndarray,
    dbcodes: np.ndarray,
    bits: int,
    qlabels: np.ndarray | None = None,
    dblabels: np.ndarray | None = None,
    *,
    stable: bool = True,
    kmax: int = 0,
    device: str = "cuda",
    memory_bytes: int | None = None,
    query_block: int | None = None,
    count_method: str = "bincount",
    progress: bool | None = None,
) -> RankingStats:
    """Rank every query against the whole database by Hamming distance, on ``device``.

    Returns what :func:`fghash.eval.ranking.rank_hamming` returns (same arrays, numpy, on the
    host). ``memory_bytes`` bounds the working memory (default: half the free GPU
    memory, 256 MiB on CPU); queries go in blocks of whole database rows
    (``query_block`` forces the block size). ``count_method``: see
    :func:`fghash.eval.hamming_torch.row_counts`.
    """
    import torch
    from tqdm.auto import tqdm

    bits = int(bits)
    qcodes = check_packed(qcodes, bits, "query codes")
    dbcodes = check_packed(dbcodes, bits, "database codes")
    labelled = qlabels is not None and dblabels is not None
    stable = stable and labelled
    dev = torch_device(device)
    nq, n_db = qcodes.shape[0], dbcodes.shape[0]
    nbins = bits + 1
    xb = database_operand(dbcodes, bits, dev)
    ql, dl = _labels(qlabels, dblabels, dev) if labelled else (None, None)
    counts = torch.zeros((nq, 2 * nbins if labelled else nbins), dtype=torch.int64, device=dev)
    ap = torch.zeros(nq, dtype=torch.float64, device=dev) if stable else None
    top = torch.zeros((nq, kmax), dtype=torch.bool, device=dev) if stable else None
    qb = query_block or block_rows(
        memory_budget(dev, memory_bytes), nq, n_db, xb.shape[1], stable=stable
    )  # the budget is measured with the database and the outputs in place
    logger.debug("ranking %d queries against %d items on %s, %d per block", nq, n_db, dev, qb)
    bar = tqdm(
        total=nq,
        desc="Hamming ranking",
        unit="query",
        leave=False,
        disable=None if progress is None else not progress,
    )
    with bar, torch.inference_mode():
        for s in range(0, nq, qb):
            sl = slice(s, min(nq, s + qb))
            d = rel = None  # the last block's are not held while this one's are made
            d = (query_operand(qcodes[sl], bits, dev) @ xb.T).to(torch.int16)
            bar.update(sl.stop - sl.start)
            if not labelled:
                counts[sl] = row_counts(d, nbins, count_method)
                continue
            rel = _relevance(ql[sl], dl)
            counts[sl] = row_counts(d + rel.to(torch.int16) * nbins, 2 * nbins, count_method)
            if stable:
                ap[sl], top[sl] = _stable(d, rel, kmax)
    counts_np = counts.cpu().numpy()
    if labelled:
        r = counts_np[:, nbins:]
        n = counts_np[:, :nbins] + r
        n_rel = r.sum(axis=1)
    else:
        n, r, n_rel = counts_np, None, None
    return RankingStats(
        n_database=n_db,
        n_relevant=n_rel,
        n=n,
        r=r,
        stable_ap=ap.cpu().numpy() if stable else None,
        stable_topk=top.cpu().numpy() if stable else None,
        bits=bits,
    )
