"""Retrieval metrics against hand-worked numbers and a plain brute-force reference.

The reference ranks with Python lists: Hamming distance by counting differing bits,
stable order by ``sorted`` (stable), and the tie-aware expectation by averaging the
stable order over *every* permutation of the database (a stable sort of a uniformly
random permutation is a uniformly random order within each distance).
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fghash.codes import pack_bits
from fghash.errors import FghashError
from fghash.eval.metrics import (
    METRICS,
    ap_of_ranked,
    average_precision,
    expected_ap,
    knn_recall,
    kth_distance,
    pr_by_radius,
    precision_at_k,
    precision_at_radius,
    recall_at_k,
    summarize,
)
from fghash.eval.ranking import (
    hamming_matrix,
    pair_distances,
    rank_float,
    rank_float_metrics,
    rank_hamming,
)

pytestmark = pytest.mark.filterwarnings("error")  # no RuntimeWarning from masked arithmetic

# --- plain reference ------------------------------------------------------------------


def ref_dist(a: list[int], b: list[int]) -> int:
    return sum(x != y for x, y in zip(a, b, strict=True))


def ref_relevant(ql, dl) -> bool:
    if np.ndim(ql) == 0:
        return int(ql) == int(dl)
    return any(x and y for x, y in zip(ql, dl, strict=True))


def ref_ap(rel: list[bool], k: int | None = None) -> float:
    """DPSH CalcTopMap: mean precision at the relevant items of the top k."""
    rel = rel[:k] if k is not None else rel
    hits, total = 0, 0.0
    for i, x in enumerate(rel, 1):
        if x:
            hits += 1
            total += hits / i
    return total / hits if hits else 0.0


def ref_orders(dists: list[int], tie_aware: bool):
    idx = list(range(len(dists)))
    if not tie_aware:
        yield sorted(idx, key=lambda i: dists[i])
        return
    for p in itertools.permutations(idx):
        yield sorted(p, key=lambda i: dists[i])


def ref_metric(dists, rels, fn, tie_aware: bool) -> float:
    vals = [fn([rels[i] for i in order]) for order in ref_orders(dists, tie_aware)]
    return float(np.mean(vals))


def ref_all(qbits, dbbits, ql, dl, ks):
    """Every metric for every query, by brute force: {(name, ties): [per query]}."""
    out: dict = {}
    n = len(dbbits)
    for q in range(len(qbits)):
        d = [ref_dist(qbits[q], x) for x in dbbits]
        rel = [ref_relevant(ql[q], y) for y in dl]
        big_r = sum(rel)
        for tie_aware, name in ((True, "tie-aware"), (False, "stable")):
            out.setdefault(("map@all", name), []).append(ref_metric(d, rel, ref_ap, tie_aware))
            for k in ks:
                ap = ref_metric(d, rel, lambda r, k=k: ref_ap(r, k), tie_aware)
                hits = ref_metric(d, rel, lambda r, k=k: sum(r[:k]), tie_aware)
                out.setdefault((f"map@{k}", name), []).append(ap)
                out.setdefault((f"p@{k}", name), []).append(hits / min(k, n))
                out.setdefault((f"r@{k}", name), []).append(hits / big_r if big_r else 0.0)
    return out


# --- hand-worked example -------------------------------------------------------------
#
# One query (code 00, label 7), five database items with 2-bit codes:
#   position : 0    1    2    3    4
#   code     : 01   00   10   11   01
#   distance : 1    0    1    2    1
#   label    : 1    2    7    7    7      -> relevant: no no yes yes yes   (R = 3)
#
# stable order (distance, then position): 1 0 2 4 3 -> relevance 0 0 1 1 1
#   AP@all = (1/3 + 2/4 + 3/5) / 3 = 43/90
#   AP@2 = 0, AP@3 = (1/3) / 1 = 1/3, P@3 = R@3 = 1/3
# tie-aware: the three items at distance 1 (one irrelevant, two relevant) take ranks
# 2, 3, 4 in random order; the irrelevant one is at rank 2, 3 or 4 with prob. 1/3:
#   at 2: 1/3 + 2/4 + 3/5 = 43/30;  at 3: 1/2 + 2/4 + 3/5 = 48/30;  at 4: 1/2 + 2/3 + 3/5 = 53/30
#   AP@all = mean(...) / 3 = (48/30) / 3 = 8/15
#   AP@2: rank 2 relevant with prob. 2/3 (then AP = 1/2) -> 1/3
#   AP@3: both of ranks 2,3 relevant with prob. 1/3 (AP = (1/2 + 2/3)/2 = 7/12), one of
#         them with prob. 2/3 (at rank 2 or 3 equally: AP = (1/2 + 1/3)/2 = 5/12)
#         -> 1/3 * 7/12 + 2/3 * 5/12 = 17/36
#   P@3 = E[hits] / 3 = (2 * 2/3) / 3 = 4/9, R@3 = (4/3) / 3 = 4/9
# radius: t=0 retrieves {1}: precision 0; t=1 retrieves 4 items, 2 relevant: 1/2, recall 2/3;
#         t=2 retrieves all: 3/5, recall 1.

HAND_Q = pack_bits(np.array([[0, 0]]))
HAND_DB = pack_bits(np.array([[1, 0], [0, 0], [0, 1], [1, 1], [1, 0]]))
HAND_QL = np.array([7])
HAND_DL = np.array([1, 2, 7, 7, 7])


@pytest.fixture(scope="module")
def hand():
    return rank_hamming(HAND_Q, HAND_DB, 2, HAND_QL, HAND_DL, stable=True, kmax=5)


def test_hand_worked_counts(hand):
    assert hand.n.tolist() == [[1, 3, 1]]
    assert hand.r.tolist() == [[0, 2, 1]]
    assert hand.n_relevant.tolist() == [3]


@pytest.mark.parametrize(
    "ties, k, want",
    [
        ("stable", None, Fraction(43, 90)),
        ("tie-aware", None, Fraction(8, 15)),
        ("stable", 2, 0),
        ("tie-aware", 2, Fraction(1, 3)),
        ("stable", 3, Fraction(1, 3)),
        ("tie-aware", 3, Fraction(17, 36)),
        ("stable", 5, Fraction(43, 90)),
        ("tie-aware", 5, Fraction(8, 15)),
        ("tie-aware", 50, Fraction(8, 15)),
    ],
)
def test_hand_worked_ap(hand, ties, k, want):
    assert average_precision(hand, k, ties)[0] == pytest.approx(float(want), abs=1e-12)


def test_hand_worked_precision_recall(hand):
    assert precision_at_k(hand, 3, "stable")[0] == pytest.approx(1 / 3)
    assert recall_at_k(hand, 3, "stable")[0] == pytest.approx(1 / 3)
    assert precision_at_k(hand, 3, "tie-aware")[0] == pytest.approx(4 / 9)
    assert recall_at_k(hand, 3, "tie-aware")[0] == pytest.approx(4 / 9)
    pr = pr_by_radius(hand.n, hand.r)
    assert pr["precision"].tolist() == pytest.approx([0.0, 0.5, 0.6])
    assert pr["recall"].tolist() == pytest.approx([0.0, 2 / 3, 1.0])
    assert precision_at_radius(hand.n, hand.r, 2)[0] == pytest.approx(0.6)
    assert precision_at_radius(hand.n, hand.r, 0)[0] == 0.0


def test_all_tied_closed_form():
    # n items all at one distance, r relevant: two items, one relevant -> (1 + 1/2) / 2.
    assert expected_ap(np.array([[0, 2]]), np.array([[0, 1]]))[0] == pytest.approx(0.75)
    # every item relevant -> AP 1 whatever the order
    assert expected_ap(np.array([[7]]), np.array([[7]]))[0] == pytest.approx(1.0)


def test_no_relevant_counts_zero():
    st_ = rank_hamming(HAND_Q, HAND_DB, 2, np.array([99]), HAND_DL, stable=True, kmax=5)
    s = summarize(st_, ks=(1, 3))
    assert s["queries_without_relevant"] == 1
    for t in ("stable", "tie-aware"):
        assert s[t]["map@all"] == 0.0
        assert s[t]["map@k"] == {"1": 0.0, "3": 0.0}
        assert s[t]["recall@k"]["3"] == 0.0


def test_stable_equals_stable_sort_reference():
    rng = np.random.default_rng(3)
    bits, nq, nb = 10, 40, 300
    qb = rng.integers(0, 2, (nq, bits))
    db = rng.integers(0, 2, (nb, bits))
    ql, dl = rng.integers(0, 5, nq), rng.integers(0, 5, nb)
    st_ = rank_hamming(
        pack_bits(qb), pack_bits(db), bits, ql, dl, stable=True, kmax=20, chunk_bytes=30_000
    )
    for q in range(nq):
        d = np.array([ref_dist(qb[q].tolist(), x.tolist()) for x in db])
        rel = (dl == ql[q])[np.argsort(d, kind="stable")].tolist()
        assert st_.stable_ap[q] == pytest.approx(ref_ap(rel), abs=1e-12)
        assert average_precision(st_, 20, "stable")[q] == pytest.approx(ref_ap(rel, 20), abs=1e-12)


# --- against the brute-force reference on random tiny problems -------------------------


@st.composite
def problems(draw, multilabel: bool = False):
    bits = draw(st.integers(1, 4))
    nb = draw(st.integers(1, 6))
    nq = draw(st.integers(1, 3))
    bitv = st.lists(st.integers(0, 1), min_size=bits, max_size=bits)
    qbits = draw(st.lists(bitv, min_size=nq, max_size=nq))
    dbbits = draw(st.lists(bitv, min_size=nb, max_size=nb))
    if multilabel:
        lab = st.lists(st.integers(0, 1), min_size=3, max_size=3)
        ql = draw(st.lists(lab, min_size=nq, max_size=nq))
        dl = draw(st.lists(lab, min_size=nb, max_size=nb))
        return bits, qbits, dbbits, np.array(ql, np.uint8), np.array(dl, np.uint8)
    ql = draw(st.lists(st.integers(0, 2), min_size=nq, max_size=nq))
    dl = draw(st.lists(st.integers(0, 2), min_size=nb, max_size=nb))
    return bits, qbits, dbbits, np.array(ql), np.array(dl)


def _check_against_reference(problem):
    bits, qbits, dbbits, ql, dl = problem
    ks = (1, 2, 4, 9)
    st_ = rank_hamming(
        pack_bits(np.array(qbits)), pack_bits(np.array(dbbits)), bits, ql, dl, stable=True, kmax=9
    )
    ref = ref_all(qbits, dbbits, ql, dl, ks)
    # counts only: database in chunks of 2 items, one query per block, two threads
    chunked = rank_hamming(
        pack_bits(np.array(qbits)),
        pack_bits(np.array(dbbits)),
        bits,
        ql,
        dl,
        stable=False,
        db_chunk=2,
        chunk_bytes=1,
        workers=2,
    )
    np.testing.assert_array_equal(chunked.n, st_.n)
    np.testing.assert_array_equal(chunked.r, st_.r)
    for ties in ("tie-aware", "stable"):
        got = average_precision(st_, None, ties)
        assert got == pytest.approx(ref[("map@all", ties)], abs=1e-10)
        for k in ks:
            assert average_precision(st_, k, ties) == pytest.approx(
                ref[(f"map@{k}", ties)], abs=1e-10
            )
            assert precision_at_k(st_, k, ties) == pytest.approx(ref[(f"p@{k}", ties)], abs=1e-10)
            assert recall_at_k(st_, k, ties) == pytest.approx(ref[(f"r@{k}", ties)], abs=1e-10)


@settings(max_examples=60, deadline=None)
@given(problems())
def test_matches_reference_single_label(problem):
    _check_against_reference(problem)


@settings(max_examples=30, deadline=None)
@given(problems(multilabel=True))
def test_matches_reference_multilabel(problem):
    _check_against_reference(problem)


@settings(max_examples=40, deadline=None)
@given(problems())
def test_counts_and_radius_match_reference(problem):
    bits, qbits, dbbits, ql, dl = problem
    st_ = rank_hamming(
        pack_bits(np.array(qbits)), pack_bits(np.array(dbbits)), bits, ql, dl, stable=False
    )
    pr = pr_by_radius(st_.n, st_.r)
    for t in range(bits + 1):
        precs, recs = [], []
        for q in range(len(qbits)):
            ret = [i for i, x in enumerate(dbbits) if ref_dist(qbits[q], x) <= t]
            hit = sum(ref_relevant(ql[q], dl[i]) for i in ret)
            big_r = sum(ref_relevant(ql[q], y) for y in dl)
            precs.append(hit / len(ret) if ret else 0.0)
            recs.append(hit / big_r if big_r else 0.0)
        assert pr["precision"][t] == pytest.approx(np.mean(precs))
        assert pr["recall"][t] == pytest.approx(np.mean(recs))


def test_duplicate_queries_and_chunks_do_not_change_results():
    rng = np.random.default_rng(5)
    bits = 12
    qb = pack_bits(rng.integers(0, 2, (30, bits)))
    qb = np.concatenate([qb, qb[:10]])  # repeated queries, same labels
    db = pack_bits(rng.integers(0, 2, (200, bits)))
    ql = rng.integers(0, 4, 30)
    ql = np.concatenate([ql, ql[:10]])
    dl = rng.integers(0, 4, 200)
    a = rank_hamming(qb, db, bits, ql, dl, stable=True, kmax=10)
    b = rank_hamming(qb, db, bits, ql, dl, stable=True, kmax=10, chunk_bytes=1)
    d = hamming_matrix(qb, db, bits)
    for q in range(len(qb)):
        assert a.n[q].tolist() == np.bincount(d[q], minlength=bits + 1).tolist()
        assert a.r[q].tolist() == np.bincount(d[q][dl == ql[q]], minlength=bits + 1).tolist()
    np.testing.assert_array_equal(a.n, b.n)
    np.testing.assert_array_equal(a.r, b.r)
    np.testing.assert_allclose(a.stable_ap, b.stable_ap)
    np.testing.assert_array_equal(a.stable_topk, b.stable_topk)


def test_hamming_matrix_against_bit_count():
    rng = np.random.default_rng(0)
    for bits in (1, 7, 8, 48, 130):
        qb, db = rng.integers(0, 2, (5, bits)), rng.integers(0, 2, (9, bits))
        want = (qb[:, None, :] != db[None, :, :]).sum(axis=2)
        np.testing.assert_array_equal(hamming_matrix(pack_bits(qb), pack_bits(db), bits), want)
        ids = rng.integers(-1, 9, (5, 4))
        got = pair_distances(pack_bits(qb), pack_bits(db), ids)
        for i in range(5):
            for j in range(4):
                if ids[i, j] >= 0:
                    assert got[i, j] == want[i, ids[i, j]]
                else:
                    assert got[i, j] > bits


def test_knn_recall_counts_ties():
    # exact distances of one query's database: [0, 1, 1, 1, 3]; k = 2 -> kth distance 1.
    n = np.array([[1, 3, 0, 1]])
    assert kth_distance(n, 2).tolist() == [1]
    assert kth_distance(n, 5).tolist() == [3]
    kth = kth_distance(n, 2)
    # any two items at distance <= 1 are a perfect answer, whichever of the tied ones
    assert knn_recall(kth, np.array([[1, 1]]), 2)[0] == 1.0
    assert knn_recall(kth, np.array([[0, 3]]), 2)[0] == 0.5
    assert knn_recall(kth, np.array([[3, 99]]), 2)[0] == 0.0


def test_ap_of_ranked_matches_reference():
    rng = np.random.default_rng(1)
    rel = rng.random((50, 12)) < 0.3
    want = [ref_ap(r.tolist()) for r in rel]
    assert ap_of_ranked(rel) == pytest.approx(want)


def test_float_ranking_against_argsort_with_ties():
    rng = np.random.default_rng(2)
    xb = rng.standard_normal((60, 5)).astype(np.float32)
    xb[30:40] = xb[0:10]  # exact duplicates: tied scores, broken by position
    xq = rng.standard_normal((8, 5)).astype(np.float32)
    ql, dl = rng.integers(0, 3, 8), rng.integers(0, 3, 60)
    for metric in ("ip", "l2"):
        st_ = rank_float(xq, xb, ql, dl, metric=metric, kmax=10)
        for q in range(8):
            if metric == "ip":
                key = -(xb.astype(np.float64) @ xq[q].astype(np.float64))
            else:
                key = ((xb.astype(np.float64) - xq[q]) ** 2).sum(axis=1)
            # round away float noise so exact duplicates tie in the reference too
            order = np.argsort(np.round(key, 4), kind="stable")
            rel = (dl == ql[q])[order].tolist()
            assert st_.stable_ap[q] == pytest.approx(ref_ap(rel), abs=1e-9)
            assert st_.stable_topk[q].tolist() == rel[:10]


def test_float_metrics_share_one_product_and_agree_with_one_metric_runs():
    rng = np.random.default_rng(4)
    xb = rng.standard_normal((70, 6)).astype(np.float32)
    xb[50:60] = xb[0:10]
    xq = rng.standard_normal((9, 6)).astype(np.float32)
    ql, dl = rng.integers(0, 3, 9), rng.integers(0, 3, 70)
    both = rank_float_metrics(xq, xb, ql, dl, ("ip", "l2"), kmax=12, chunk_bytes=1)
    for metric in ("ip", "l2"):
        one = rank_float(xq, xb, ql, dl, metric=metric, kmax=12)
        np.testing.assert_array_equal(both[metric].stable_ap, one.stable_ap)
        np.testing.assert_array_equal(both[metric].stable_topk, one.stable_topk)
        np.testing.assert_array_equal(both[metric].n_relevant, one.n_relevant)


def test_summarize_tie_aware_in_one_pass_equals_the_metric_functions():
    rng = np.random.default_rng(9)
    bits = 10
    qb, db = pack_bits(rng.integers(0, 2, (50, bits))), pack_bits(rng.integers(0, 2, (400, bits)))
    ql, dl = rng.integers(0, 6, 50), rng.integers(0, 6, 400)
    ql[0] = 99  # a query without relevant items
    st_ = rank_hamming(qb, db, bits, ql, dl, stable=False)
    got = summarize(st_, ks=(1, 7, 1000), ties=("tie-aware",))["tie-aware"]
    assert got["map@all"] == pytest.approx(np.mean(average_precision(st_, None)), abs=1e-12)
    for k in (1, 7, 1000):
        assert got["map@k"][str(k)] == pytest.approx(np.mean(average_precision(st_, k)), abs=1e-12)
        assert got["precision@k"][str(k)] == pytest.approx(np.mean(precision_at_k(st_, k)))
        assert got["recall@k"][str(k)] == pytest.approx(np.mean(recall_at_k(st_, k)))


def test_registry_and_errors(hand):
    assert METRICS["map@all"].worst == float("-inf")
    assert METRICS["latency-p99-ms"].worst == float("inf")
    got = METRICS["map@k"].function(hand, 3, "tie-aware")
    assert got[0] == pytest.approx(17 / 36)
    unl = rank_hamming(HAND_Q, HAND_DB, 2)
    assert unl.r is None and unl.n.tolist() == [[1, 3, 1]]
    with pytest.raises(FghashError, match="labels"):
        average_precision(unl)
    short = rank_hamming(HAND_Q, HAND_DB, 2, HAND_QL, HAND_DL, kmax=2)
    with pytest.raises(FghashError, match="kmax"):
        average_precision(short, 3, "stable")
    with pytest.raises(FghashError, match="uint8"):
        rank_hamming(HAND_Q, HAND_DB, 12)


# --- the counting kernel at its edges --------------------------------------------------


def _reference_counts(qb, db, ql, dl):
    """n[q, d] and r[q, d] by comparing unpacked bits and counting in Python."""
    bits = qb.shape[1]
    dist = (qb[:, None, :] != db[None, :, :]).sum(axis=2)
    n = np.zeros((len(qb), bits + 1), dtype=np.int64)
    r = np.zeros_like(n)
    for q in range(len(qb)):
        for j in range(len(db)):
            n[q, dist[q, j]] += 1
            if ql is not None and ref_relevant(ql[q], dl[j]):
                r[q, dist[q, j]] += 1
    return n, r


@pytest.mark.parametrize("bits", [1, 7, 8, 12, 63, 64, 65, 130])
@pytest.mark.parametrize("labels", ["single", "multi-hot", "none"])
def test_counts_across_chunk_and_word_boundaries(bits, labels):
    rng = np.random.default_rng(bits)
    nq, nb = 23, 101
    qb, db = rng.integers(0, 2, (nq, bits)), rng.integers(0, 2, (nb, bits))
    qb[:4] = qb[4:8]  # repeated queries
    if labels == "single":
        ql, dl = rng.integers(0, 5, nq), rng.integers(0, 6, nb)  # class 5 never queried
        ql[0] = 9  # a class the database lacks
    elif labels == "multi-hot":
        ql = (rng.random((nq, 4)) < 0.3).astype(np.uint8)
        dl = (rng.random((nb, 4)) < 0.3).astype(np.uint8)
    else:
        ql = dl = None
    want_n, want_r = _reference_counts(qb, db, ql, dl)
    for db_chunk, chunk_bytes, workers in ((7, 1, 2), (100, 2000, 1), (1 << 20, 1 << 28, 2)):
        got = rank_hamming(
            pack_bits(qb),
            pack_bits(db),
            bits,
            ql,
            dl,
            stable=False,
            db_chunk=db_chunk,
            chunk_bytes=chunk_bytes,
            workers=workers,
        )
        np.testing.assert_array_equal(got.n, want_n)
        if ql is None:
            assert got.r is None and got.n_relevant is None
        else:
            np.testing.assert_array_equal(got.r, want_r)
            np.testing.assert_array_equal(got.n_relevant, want_r.sum(axis=1))


@pytest.mark.parametrize("bits", [3, 12, 61])
def test_unused_bits_of_the_last_byte_are_ignored(bits):
    rng = np.random.default_rng(7)
    qb, db = rng.integers(0, 2, (9, bits)), rng.integers(0, 2, (40, bits))
    ql, dl = rng.integers(0, 3, 9), rng.integers(0, 3, 40)
    clean_q, clean_db = pack_bits(qb), pack_bits(db)
    dirty_q, dirty_db = clean_q.copy(), clean_db.copy()
    dirty_q[:, -1] |= np.uint8(0xFF << (bits % 8) & 0xFF)
    dirty_db[::2, -1] |= np.uint8(0xFF << (bits % 8) & 0xFF)
    want_n, want_r = _reference_counts(qb, db, ql, dl)
    got = rank_hamming(dirty_q, dirty_db, bits, ql, dl, stable=True, kmax=5)
    np.testing.assert_array_equal(got.n, want_n)
    np.testing.assert_array_equal(got.r, want_r)
    np.testing.assert_array_equal(
        hamming_matrix(dirty_q, dirty_db, bits), (qb[:, None] != db).sum(2)
    )


def test_empty_database_and_empty_queries():
    q = pack_bits(np.zeros((3, 10), dtype=np.uint8))
    st_ = rank_hamming(q, q[:0], 10, np.arange(3), np.arange(0), stable=True, kmax=4)
    assert st_.n.shape == (3, 11) and st_.n.sum() == 0 and st_.stable_topk.shape == (3, 4)
    st_ = rank_hamming(q[:0], q, 10, np.arange(0), np.arange(3), stable=True, kmax=4)
    assert st_.n.shape == (0, 11) and st_.n_queries == 0


def test_tie_aware_ap_at_k_in_a_huge_tie_group_without_overflow():
    # one tie group of 3000 items, 2990 relevant, cut at k = 1000 (the masked terms of the
    # hypergeometric sum used to overflow exp). Reference: the sum over h written out with
    # exact binomials; given h relevant in m = k slots uniformly, the expected precision
    # sum is (h/m) Σ_j (1 + (j-1)(h-1)/(m-1)) / j.
    gn, gr, m = 3000, 2990, 1000
    want = Fraction(0)
    total = math.comb(gn, m)
    harm = [Fraction(0)]
    for j in range(1, m + 1):
        harm.append(harm[-1] + Fraction(1, j))
    for h in range(max(1, m - (gn - gr)), min(gr, m) + 1):
        p = Fraction(math.comb(gr, h) * math.comb(gn - gr, m - h), total)
        s = Fraction(h, m) * (harm[m] + Fraction(h - 1, m - 1) * (m - harm[m]))
        want += p * s / h
    got = expected_ap(np.array([[0, gn]]), np.array([[0, gr]]), k=m)[0]
    assert got == pytest.approx(float(want), rel=1e-9)
