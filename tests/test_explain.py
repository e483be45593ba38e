"""`fghash explain`: AUC, awareness and its rotation null, bit statistics, grids, skips."""

from __future__ import annotations

import itertools
import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fghash.cli import main
from fghash.codes import Split, codes_to_signs, make_codes_file, signs_to_codes, write_codes
from fghash.data import generate_synthetic
from fghash.explain.stats import (
    auc_matrix,
    awareness,
    bit_correlation,
    effective_bits,
    random_rotation,
    rotation_null,
)
from fghash.viz.sheets import Tile, compose, draw_sheet


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


# --- AUC --------------------------------------------------------------------------------


def test_auc_hand_worked_case_with_a_tie():
    # positives score 3, 1, 2; negatives 0, 2. Pairs (pos > neg): 3>0, 3>2, 1>0, 2>0 = 4,
    # one tie (2 = 2) counts 1/2: AUC = 4.5 / (3 * 2) = 0.75.
    s = np.array([[3.0], [1.0], [2.0], [0.0], [2.0]])
    a = np.array([[1], [1], [1], [0], [0]])
    assert auc_matrix(s, a)[0, 0] == pytest.approx(0.75)
    assert auc_matrix(-s, a)[0, 0] == pytest.approx(0.25)


def test_auc_equals_a_direct_pairwise_count():
    rng = np.random.default_rng(0)
    s = rng.integers(-3, 4, size=(60, 5)).astype(float)  # many ties
    a = rng.integers(0, 2, size=(60, 4))
    auc = auc_matrix(s, a)
    for j, k in itertools.product(range(4), range(5)):
        pos, neg = s[a[:, j] == 1, k], s[a[:, j] == 0, k]
        wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
        assert auc[j, k] == pytest.approx(wins / (len(pos) * len(neg)), abs=1e-12)


def test_constant_attribute_has_no_auc():
    auc = auc_matrix(np.arange(4.0)[:, None], np.array([[1, 0], [1, 1], [1, 0], [1, 1]]))
    assert np.isnan(auc[0, 0]) and not np.isnan(auc[1, 0])


# --- awareness and the rotation null ----------------------------------------------------


def test_rotation_preserves_inner_products():
    rng = np.random.default_rng(1)
    x = np.tanh(rng.standard_normal((30, 12)))
    q = random_rotation(12, rng)
    assert np.allclose(q.T @ q, np.eye(12), atol=1e-12)
    y = x @ q
    assert np.allclose(y @ y.T, x @ x.T, atol=1e-10)


def test_bits_copying_attributes_score_near_max_and_rotations_far_lower():
    rng = np.random.default_rng(2)
    n, k = 400, 16
    attrs = rng.integers(0, 2, size=(n, k))
    relaxed = np.tanh(2.0 * (2 * attrs - 1) + 0.1 * rng.standard_normal((n, k)))
    aw = awareness(auc_matrix(relaxed, attrs))
    assert aw.per_bit == pytest.approx(0.5, abs=1e-9)
    assert aw.per_attribute == pytest.approx(0.5, abs=1e-9)
    assert list(aw.best_attribute) == list(range(k))
    null = rotation_null(relaxed, attrs, rotations=10, seed=0)
    # a rotated coordinate still leans on its largest component, so the null is not 0, but
    # every rotation stays clearly below the aligned bits (0.31 on average here)
    assert null.per_bit.max() < 0.4 and null.per_attribute.max() < 0.4
    assert null.per_bit.mean() < 0.35
    assert null.summary(aw)["per_bit_p"] == pytest.approx(1 / 11)
    # sign-only codes: the same, on rotated-then-binarised codes
    signs = np.where(relaxed >= 0, 1.0, -1.0)
    assert awareness(auc_matrix(signs, attrs)).per_bit == pytest.approx(0.5)
    assert rotation_null(signs, attrs, rotations=5, signs=True).per_bit.max() < 0.4


def test_bit_statistics_against_hand_counts():
    s = np.array([[1, 1, -1], [1, 1, 1], [-1, -1, 1], [-1, -1, -1]], dtype=float)
    c = bit_correlation(s)
    assert c[0, 1] == pytest.approx(1.0) and c[0, 2] == pytest.approx(0.0)
    eff = effective_bits(s)
    assert eff["balance_entropy"] == pytest.approx(3.0)  # every bit balanced
    assert eff["distinct_codes"] == 4 and eff["code_entropy"] == pytest.approx(2.0)
    # correlation eigenvalues 2, 1, 0: normalised (2/3, 1/3), exp of their entropy
    want = np.exp(-(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3)))
    assert eff["correlation_rank"] == pytest.approx(want)


# --- sheets -----------------------------------------------------------------------------


def test_sheet_tiles_hold_their_images_and_count(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (250, 200, 0), (120, 0, 120)]
    rows = [
        [Tile(np.full((20, 20, 3), c, np.uint8), f"t{i}") for i, c in enumerate(colours[:3])],
        [
            Tile(np.full((20, 20, 3), colours[3], np.uint8), "x", "relevant"),
            None,
            Tile(np.full((20, 20, 3), colours[4], np.uint8)),
        ],
    ]
    canvas, boxes = compose(rows, 20)
    assert len(boxes) == 5
    for (i, j, x, y), want in zip(boxes, colours, strict=True):
        assert (canvas[y : y + 20, x : x + 20] == want).all()
        assert rows[i][j] is not None
    path, n = draw_sheet(rows, tmp_path / "s.png", title="t", row_labels=["a", "b"], tile=20)
    assert n == 5 and Image.open(path).size[0] > 60


# --- the command on a real (tiny) synthetic data set -------------------------------------


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A codes file over generated bird images whose 12 relaxed bits follow the 12 attributes."""
    base = tmp_path_factory.mktemp("explain")
    root = generate_synthetic(
        base / "birds", num_classes=4, train_per_class=5, test_per_class=2, image_size=32
    )
    names = (root / "attributes.txt").read_text().split("\n")
    names = [n for n in names if n]
    attr = {}
    for line in (root / "image_attribute_labels.txt").read_text().splitlines():
        p, *v = line.split()
        attr[p] = [int(x) for x in v]
    rng = np.random.default_rng(0)

    def split(name):
        rows = [ln.split() for ln in (root / f"{name}.txt").read_text().splitlines() if ln]
        paths = [r[0] for r in rows]
        a = np.array([attr[p] for p in paths], dtype=np.uint8)
        relaxed = np.tanh((2.0 * a - 1) + 0.3 * rng.standard_normal(a.shape)).astype(np.float32)
        return Split(
            signs_to_codes(relaxed),
            labels=np.array([int(r[1]) for r in rows]),
            paths=paths,
            features=relaxed,
            features_kind="relaxed_code",
            attributes=a,
        )

    cf = make_codes_file(
        12, split("train"), split("test"), method="a2net", config={"data_root": str(root)},
        attribute_names=names,
    )  # fmt: skip
    return write_codes(base / "codes.h5", cf), root


def test_explain_writes_every_part(synth, tmp_path):
    codes, _ = synth
    out = tmp_path / "ex"
    r = run("explain", codes, "--out", out, "--bits-to-show", "0,5-6", "--per-bit", "3",
            "--num-queries", "2", "-k", "4", "--rotations", "5")  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "explain.json").read_text())
    for f in ("bits/bit-00.png", "bits/bit-05.png", "bits/bit-06.png", "bits_overview.png",
              "auc_heatmap.png", "awareness_null.png", "bit_stats.png", "retrieval.png"):  # fmt: skip
        assert (out / f).is_file() and f in doc["figures"], f
    assert not (out / "bits" / "bit-01.png").exists()
    # 3 bits x (3 + 3) tiles on their own sheets, and again on the overview
    assert doc["bit_grid_tiles"] == 2 * 3 * 6
    aw = doc["awareness"]
    assert 0 < aw["per_bit"] <= 0.5 and aw["null"]["rotations"] == 5
    assert [b["bit"] for b in aw["best_per_bit"]] == list(range(12))
    assert len(doc["retrieval"]["examples"]) == 2
    assert all(len(e["results"]) == 4 for e in doc["retrieval"]["examples"])
    assert doc["skipped"] == []
    md = (out / "explain.md").read_text()
    assert "Attribute awareness" in md and "Skipped" not in md
    # a second run refuses to overwrite, --force replaces
    r = run("explain", codes, "--out", out)
    assert r.exit_code == 2 and "--force" in r.output


def test_explain_without_attributes_or_paths_says_what_it_skipped(tmp_path):
    rng = np.random.default_rng(0)
    db = Split(signs_to_codes(rng.standard_normal((30, 8))), labels=rng.integers(0, 3, 30))
    q = Split(signs_to_codes(rng.standard_normal((5, 8))), labels=rng.integers(0, 3, 5))
    codes = write_codes(tmp_path / "bare.h5", make_codes_file(8, db, q, method="itq"))
    out = tmp_path / "ex"
    r = run("explain", codes, "--out", out, "--rotations", "3")
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "explain.json").read_text())
    skipped = " ".join(doc["skipped"])
    assert "no image paths" in skipped and "no ground-truth attributes" in skipped
    assert "relaxed values" in skipped and "retrieval figure" in skipped
    assert doc["figures"] == ["bit_stats.png"]
    md = (out / "explain.md").read_text()
    assert "## Skipped" in md and "no ground-truth attributes" in md
    assert "skipped:" in r.output


def test_explain_moved_data_root_is_skipped_then_found_with_data_root(synth, tmp_path):
    codes, root = synth
    moved = tmp_path / "elsewhere"
    root.rename(moved)
    try:
        r = run("explain", codes, "--out", tmp_path / "a", "--rotations", "2")
        assert r.exit_code == 0, r.output
        doc = json.loads((tmp_path / "a" / "explain.json").read_text())
        assert any("--data-root" in s for s in doc["skipped"])
        assert "retrieval.png" not in doc["figures"]
        r = run("explain", codes, "--out", tmp_path / "b", "--rotations", "2", "--data-root", moved)
        assert r.exit_code == 0, r.output
        assert (tmp_path / "b" / "retrieval.png").is_file()
    finally:
        moved.rename(root)


def test_compare_puts_scores_side_by_side(synth, tmp_path):
    codes, _ = synth
    rng = np.random.default_rng(0)
    db = Split(signs_to_codes(rng.standard_normal((30, 8))), labels=rng.integers(0, 3, 30))
    bare = write_codes(tmp_path / "bare.h5", make_codes_file(8, db, method="itq"))
    out = tmp_path / "cmp"
    r = run("explain", codes, bare, "--out", out, "--rotations", "4")
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "explain.json").read_text())
    assert [("per_bit" in row) for row in doc["rows"]] == [True, False]
    assert (out / "compare.png").is_file()
    assert "bare.h5: no attributes" in (out / "explain.md").read_text()


def test_awareness_text_aligns_the_compare_table():
    from fghash.explain.compare import awareness_text

    def scored(per_bit, per_attr, m, s):
        null = {"per_bit_mean": m, "per_bit_std": s, "per_attribute_mean": m,
                "per_attribute_std": s}  # fmt: skip
        return {"per_bit": per_bit, "per_attribute": per_attr, "null": null}

    rows = [
        {"name": "a2net", **scored(0.25, 0.125, 0.0625, 0.01),
         "binary": scored(0.2, 0.1, 0.05, 0.02)},
        {"name": "long-name.h5", "skipped": "no attributes"},
        {"name": "itq", **scored(0.5, 0.375, 0.25, 0.0)},
    ]  # fmt: skip
    expected = [
        "attribute awareness (mean best |AUC-0.5|; null: random rotations):",
        "  codes file    per bit  null         per attribute  null         signs  null",
        "  a2net         0.250    0.062±0.010  0.125          0.062±0.010  0.200  0.050±0.020",
        "  long-name.h5  -        -            -              -            -      -",
        "  itq           0.500    0.250±0.000  0.375          0.250±0.000  -      -",
    ]
    assert awareness_text(rows).splitlines() == expected


def test_bad_bits_to_show_is_one_sentence(synth, tmp_path):
    codes, _ = synth
    r = run("explain", codes, "--out", tmp_path / "x", "--bits-to-show", "3,40")
    assert r.exit_code == 2 and "bits 0..11" in r.output and "Traceback" not in r.output


def test_attributes_from_another_codes_file_by_id(synth, tmp_path):
    codes, _ = synth
    rng = np.random.default_rng(1)
    n = 20  # the synthetic database: 4 classes x 5 images, ids 0..19
    ids = rng.permutation(n)
    db = Split(signs_to_codes(rng.standard_normal((n, 8))), ids=ids, labels=ids % 4)
    itq = write_codes(tmp_path / "itq.h5", make_codes_file(8, db, method="itq"))
    out = tmp_path / "ex"
    r = run("explain", itq, "--out", out, "--rotations", "3", "--attributes-from", codes)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "explain.json").read_text())
    assert doc["awareness"]["scores_from"] == "signs of the codes"
    assert not any("attributes" in s for s in doc["skipped"])
    # row i of itq.h5 is item ids[i]: its attributes are row ids[i] of the synthetic file
    with h5py.File(codes, "r") as f:
        attrs = f["database/attributes"][()][ids]
    signs = codes_to_signs(db.codes, 8)
    assert doc["awareness"]["per_bit"] == pytest.approx(awareness(auc_matrix(signs, attrs)).per_bit)


def test_out_folder_with_other_files_is_refused_and_kept(synth, tmp_path):
    codes, _ = synth
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.md").write_text("keep me")
    r = run("explain", codes, "--out", out, "--rotations", "2")
    assert r.exit_code == 2 and "other files" in r.output and "Traceback" not in r.output
    assert [p.name for p in out.iterdir()] == ["notes.md"]
