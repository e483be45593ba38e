"""The start of the database codes B: ADSH's random bits (paper protocols) and the
class-consistent codes the demo starts from (``init_codes="class"``), and ``hold_codes``.

Checked against independent facts: Hadamard rows are orthogonal, a NumPy redraw of the
random bits, the labels of a tiny training run.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fghash.data import generate_synthetic, load_dataset
from fghash.demo import DemoConfig
from fghash.errors import FghashError
from fghash.runs.config import resolve_config
from fghash.training.adsh import class_codes, init_database_codes
from fghash.training.loop import train


def test_random_init_is_adsh_independent_bits_unchanged() -> None:
    # the seeded NumPy draw training has always started from (redrawn here by hand)
    seed = 7
    state = np.random.SeedSequence([seed, 0xB]).generate_state(1)[0]
    draw = np.random.default_rng(int(state)).standard_normal((50, 12))
    expected = np.where(draw >= 0, 1.0, -1.0)
    np.testing.assert_array_equal(init_database_codes(50, 12, seed).numpy(), expected)


@pytest.mark.parametrize("protocol", ["paper", "reference"])
def test_paper_protocols_keep_adsh_random_init(protocol: str) -> None:
    cfg = resolve_config("cub200", None, protocol=protocol)
    assert cfg.init_codes == "random" and cfg.hold_codes == 0


def test_demo_starts_from_class_codes() -> None:
    cfg = DemoConfig().train_config("/nonexistent")
    assert cfg.init_codes == "class"
    assert 0 < cfg.hold_codes < cfg.max_iter


def test_class_codes_are_hadamard_rows() -> None:
    # m = 16 classes and 15 bits: every non-constant column of H_16; with the constant
    # column put back the rows are orthogonal (H Hᵀ = m I)
    codes = class_codes(16, 15, seed=3)
    full = np.hstack([np.ones((16, 1)), codes])
    np.testing.assert_array_equal(full @ full.T, 16 * np.eye(16))
    np.testing.assert_array_equal(codes.sum(axis=0), np.zeros(15))  # every bit balanced


def test_same_class_shares_a_code_and_bits_are_balanced() -> None:
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(16), 30))  # the demo's 16 × 30
    B = init_database_codes(len(labels), 12, seed=5, labels=labels).numpy()
    assert set(np.unique(B)) == {-1.0, 1.0}
    for c in range(16):
        assert len({tuple(r) for r in B[labels == c]}) == 1
    firsts = [B[np.flatnonzero(labels == c)[0]] for c in range(16)]
    # two rows of H_16 differ in 8 of the 15 non-constant columns, so in at least 8 - 3
    # of any 12 of them
    dist = [int((a != b).sum()) for a, b in itertools.combinations(firsts, 2)]
    assert min(dist) >= 5
    np.testing.assert_array_equal(B.sum(axis=0), np.zeros(12))


def test_multi_hot_takes_the_sign_of_its_classes_codes() -> None:
    codes = class_codes(4, 8, seed=1)
    y = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [1, 1, 1, 0]])
    B = init_database_codes(3, 8, seed=1, labels=y).numpy()
    np.testing.assert_array_equal(B[0], codes[0])
    np.testing.assert_array_equal(B[1], codes[2])
    np.testing.assert_array_equal(B[2], np.where(codes[:3].sum(axis=0) >= 0, 1.0, -1.0))


def test_bad_labels_are_refused() -> None:
    with pytest.raises(FghashError):
        init_database_codes(3, 8, seed=0, labels=[0, 1])
    with pytest.raises(FghashError):
        init_database_codes(2, 8, seed=0, labels=[0, -1])
    with pytest.raises(FghashError):
        resolve_config("synthetic", None, init_codes="labels").validate()


def test_held_codes_are_the_class_codes_after_training(tmp_path) -> None:
    root = generate_synthetic(
        tmp_path / "birds", num_classes=4, train_per_class=4, test_per_class=1, image_size=32
    )
    common = dict(
        data_root=str(root),
        backbone="resnet18",
        image_size=32,
        bits=8,
        num_attention=2,
        num_samples=8,
        batch_size=4,
        max_iter=1,
        epochs=1,
        device="cpu",
        weights="none",
        train_crop="resize-crop",
        gamma=1.0,
        init_codes="class",
    )
    labels = np.asarray(load_dataset("synthetic", root, "train").labels)
    held = train(resolve_config("synthetic", None, hold_codes=1, **common), tmp_path / "held")
    B = held.database_codes
    rows = {c: {tuple(r) for r in B[labels == c]} for c in range(4)}
    assert all(len(r) == 1 for r in rows.values())  # one code per class, untouched
    assert len(set().union(*rows.values())) == 4  # and four different ones
    np.testing.assert_array_equal(B, class_codes(4, 8, seed=0)[labels])
    # without the hold the discrete update runs: B follows the network's outputs
    moved = train(resolve_config("synthetic", None, **common), tmp_path / "moved")
    assert not np.array_equal(moved.database_codes, B)


def test_bench_demo_seeds_helpers() -> None:
    from bench.scripts.bench_demo_seeds import parse_range, summarise

    assert parse_range("0-4") == [0, 1, 2, 3, 4]
    assert parse_range("1,2") == [1, 2]
    assert parse_range("0-1,7") == [0, 1, 7]
    rows = [{"map_tie_aware": m} for m in (0.5, 0.2, 0.9)] + [{"error": "x"}]
    assert summarise(rows) == {"min": 0.2, "median": 0.5, "runs": 3}
