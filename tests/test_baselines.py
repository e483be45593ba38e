"""Shallow baselines (LSH, PCAH, ITQ, SDH), feature files and ``fghash baseline``.

Every check is against an independent computation: numpy's eigh for PCA, brute-force
Hamming ranking for retrieval, random rotations for the Procrustes step.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from fghash.baselines import BASELINES, ITQ, create_baseline, list_baselines
from fghash.baselines.run import output_paths, parse_bits, run_baseline
from fghash.cli import main
from fghash.codes import Split, file_checksum, make_codes_file, read_codes, unpack_bits, write_codes
from fghash.codes.features import FeatureSplit, read_features, write_features
from fghash.errors import FghashError


def clustered(n: int, dim: int, classes: int, seed: int, spread: float = 4.0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)) * spread
    y = np.arange(n) % classes
    X = centres[y] + rng.standard_normal((n, dim))
    return X.astype(np.float32), y.astype(np.int64), centres


def split_sets(seed: int = 0, dim: int = 32, classes: int = 6):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)) * 4.0

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, classes, n)
        return (centres[y] + rng.standard_normal((n, dim))).astype(np.float32), y

    (xd, yd), (xq, yq) = draw(300), draw(60)
    return {
        "database": FeatureSplit(xd, labels=yd, ids=np.arange(300) + 1000),
        "query": FeatureSplit(xq, labels=yq, paths=[f"q/{i}.jpg" for i in range(60)]),
    }


def hamming_map(q_signs: np.ndarray, d_signs: np.ndarray, yq: np.ndarray, yd: np.ndarray) -> float:
    """mAP@all of a brute-force Hamming ranking (ties by database order)."""
    bits = q_signs.shape[1]
    dist = (bits - q_signs.astype(np.int64) @ d_signs.T.astype(np.int64)) // 2
    aps = []
    for i in range(len(q_signs)):
        order = np.argsort(dist[i], kind="stable")
        rel = (yd[order] == yq[i]).astype(np.float64)
        if rel.sum() == 0:
            continue
        hits = np.cumsum(rel)
        aps.append(float((hits / np.arange(1, len(rel) + 1))[rel == 1].mean()))
    return float(np.mean(aps))


# -- registry -------------------------------------------------------------------------


def test_registry_lists_the_four_methods_and_rejects_unknown_names():
    assert list_baselines() == ["itq", "lsh", "pcah", "sdh"]
    assert set(BASELINES) == set(list_baselines())
    with pytest.raises(FghashError, match="unknown baseline"):
        create_baseline("spectral", 16)
    with pytest.raises(FghashError, match="no parameter n_iter"):
        create_baseline("lsh", 16, n_iter=3)
    # None kwargs are dropped so CLI defaults never override a method's own.
    assert create_baseline("itq", 8, n_iter=None).n_iter == 50


@pytest.mark.parametrize("method", ["itq", "lsh", "pcah", "sdh"])
def test_state_dict_round_trip_gives_the_same_codes(method):
    X, y, _ = clustered(120, 16, 4, seed=1)
    h = create_baseline(method, 12, seed=3).fit(X, y)
    h2 = type(h).from_state(h.state_dict())
    np.testing.assert_array_equal(h2.encode(X), h.encode(X))
    assert h2.params() == h.params()


# -- ITQ ------------------------------------------------------------------------------


def test_itq_rotation_is_orthogonal_and_quantization_loss_never_increases():
    X, y, _ = clustered(400, 24, 8, seed=2, spread=1.5)
    bits = 16
    itq = ITQ(bits, n_iter=30, seed=5, record_rotations=True).fit(X)
    R = itq.rotation_
    np.testing.assert_allclose(R.T @ R, np.eye(bits), atol=1e-10)
    losses = itq.losses_
    assert len(losses) == 31
    assert np.all(np.diff(losses) <= 1e-9 * losses[0]), np.diff(losses)
    assert losses[-1] < losses[0]

    # Independent PCA: eigh of numpy's covariance; the model's directions must match up to sign.
    Xc = X.astype(np.float64) - X.astype(np.float64).mean(0)
    evals, evecs = np.linalg.eigh(np.cov(Xc, rowvar=False))
    top = evecs[:, np.argsort(evals)[::-1][:bits]]
    dots = np.abs(np.sum(top * itq.components_, axis=0))
    np.testing.assert_allclose(dots, 1.0, atol=1e-8)

    # Recompute every recorded loss Q(sgn(V R_t), R_t) = ||B - V R_t||_F^2 from the rotations.
    V = Xc @ itq.components_
    recomputed = []
    for Rt in itq.rotations_:
        VR = V @ Rt
        B = np.where(VR >= 0, 1.0, -1.0)
        recomputed.append(np.sum((B - VR) ** 2))
    np.testing.assert_allclose(recomputed, losses, rtol=1e-10)
    assert np.all(np.diff(recomputed) <= 1e-9 * recomputed[0])

    # Procrustes step: R_t beats any other rotation for B_t = sgn(V R_{t-1}).
    rng = np.random.default_rng(0)
    B1 = np.where(V @ itq.rotations_[0] >= 0, 1.0, -1.0)
    best = np.sum((B1 - V @ itq.rotations_[1]) ** 2)
    for _ in range(20):
        Q, _ = np.linalg.qr(rng.standard_normal((bits, bits)))
        assert best <= np.sum((B1 - V @ Q) ** 2) + 1e-9

    # The codes are sgn(V R) for the final rotation, and the packed form matches.
    signs = itq.transform(X)
    np.testing.assert_array_equal(signs, np.where(V @ R >= 0, 1, -1))
    np.testing.assert_array_equal(unpack_bits(itq.encode(X), bits), (signs > 0).astype(np.uint8))


def test_itq_and_pcah_refuse_more_bits_than_dimensions():
    X = np.random.default_rng(0).standard_normal((50, 8))
    for m in ("itq", "pcah"):
        with pytest.raises(FghashError, match="at least 16 dimensions"):
            create_baseline(m, 16).fit(X)


# -- LSH ------------------------------------------------------------------------------


def test_lsh_is_deterministic_for_a_seed_and_differs_for_another():
    X, _, _ = clustered(100, 20, 5, seed=3)
    a = create_baseline("lsh", 32, seed=7).fit(X).encode(X)
    b = create_baseline("lsh", 32, seed=7).fit(X).encode(X)
    c = create_baseline("lsh", 32, seed=8).fit(X).encode(X)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (100, 4) and a.dtype == np.uint8
    assert np.mean(unpack_bits(a, 32) != unpack_bits(c, 32)) > 0.2


def test_lsh_hamming_distance_estimates_the_angle():
    # P[bit differs] = angle / pi for random hyperplanes through the (here zero) mean.
    x = np.array([1.0, 0.0, 0.0])
    y = np.array([np.cos(1.0), np.sin(1.0), 0.0])  # 1 radian apart
    X = np.stack([x, y, -x, -y])  # mean 0, so centring changes nothing
    lsh = create_baseline("lsh", 1024, seed=123).fit(X)
    s = lsh.transform(X[:2])
    assert abs(np.mean(s[0] != s[1]) - 1.0 / np.pi) < 0.05


# -- PCAH -----------------------------------------------------------------------------


def test_pcah_is_the_sign_of_the_projection_on_the_top_eigenvectors():
    rng = np.random.default_rng(4)
    scales = np.linspace(5.0, 0.5, 12)  # distinct variances: well separated eigenvalues
    basis, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    X = (rng.standard_normal((300, 12)) * scales) @ basis.T + 3.0
    bits = 6
    got = create_baseline("pcah", bits).fit(X).transform(X)

    mu = X.mean(axis=0)
    evals, evecs = np.linalg.eigh((X - mu).T @ (X - mu) / (len(X) - 1))
    top = evecs[:, np.argsort(evals)[::-1][:bits]]
    want = np.where((X - mu) @ top >= 0, 1, -1)
    for k in range(bits):  # eigenvectors are defined up to sign: each column equal or negated
        assert np.array_equal(got[:, k], want[:, k]) or np.array_equal(got[:, k], -want[:, k]), k


# -- SDH ------------------------------------------------------------------------------


def test_sdh_fits_a_linearly_separable_set_perfectly():
    X, y, centres = clustered(240, 10, 4, seed=5, spread=3.0)
    y = y * 10 + 3  # arbitrary label values
    sdh = create_baseline("sdh", 16, n_anchors=120, seed=0).fit(X, y)
    assert sdh.anchors_.shape == (120, 10)
    # Classification through the learned W on the hashed training set.
    scores = sdh.transform(X).astype(np.float64) @ sdh.W_
    pred = sdh.classes_[np.argmax(scores, axis=1)]
    assert np.mean(pred == y) == 1.0
    # Hamming 1-NN retrieval on the training set is also perfect: same class, same code.
    signs = sdh.transform(X)
    assert hamming_map(signs, signs, y, y) == pytest.approx(1.0)


def test_sdh_needs_labels():
    X, _, _ = clustered(50, 8, 2, seed=6)
    with pytest.raises(FghashError, match="supervised and needs labels"):
        create_baseline("sdh", 8).fit(X)


def test_sdh_accepts_multi_hot_labels():
    X, y, _ = clustered(120, 8, 3, seed=7)
    Y = np.eye(3, dtype=np.uint8)[y]
    sdh = create_baseline("sdh", 8, n_anchors=60).fit(X, Y)
    pred = np.argmax(sdh.transform(X).astype(float) @ sdh.W_, axis=1)
    assert np.mean(pred == y) == 1.0


# -- feature files --------------------------------------------------------------------


def test_features_only_file_round_trip(tmp_path):
    splits = split_sets()
    p = write_features(tmp_path / "f.h5", splits, kind="backbone", attrs={"arch": "resnet50"})
    with h5py.File(p) as f:
        assert f.attrs["format"] == "fghash.features" and f.attrs["arch"] == "resnet50"
        assert "codes" not in f["database"]
    got = read_features(p)
    assert list(got) == ["database", "query"]
    for name, s in splits.items():
        np.testing.assert_array_equal(got[name].features, s.features)
        np.testing.assert_array_equal(got[name].labels, s.labels)
        np.testing.assert_array_equal(got[name].ids, s.ids)
        assert got[name].kind == "backbone"
    assert got["query"].paths == [f"q/{i}.jpg" for i in range(60)]
    assert got["database"].paths is None
    assert not list(tmp_path.glob(".*tmp"))


def test_read_features_reads_a_full_codes_file(tmp_path):
    X, y, _ = clustered(30, 5, 3, seed=8)
    db = Split(
        codes=np.zeros((30, 1), np.uint8), labels=y, features=X, features_kind="relaxed_code"
    )
    write_codes(tmp_path / "c.h5", make_codes_file(8, db, method="a2net"))
    got = read_features(tmp_path / "c.h5", splits=("database",))
    np.testing.assert_array_equal(got["database"].features, X)
    assert got["database"].kind == "relaxed_code"
    with pytest.raises(FghashError, match="no split 'query'"):
        read_features(tmp_path / "c.h5")


def test_missing_features_dataset_says_how_to_make_one(tmp_path):
    db = Split(codes=np.zeros((10, 1), np.uint8))
    write_codes(tmp_path / "c.h5", make_codes_file(8, db))
    with pytest.raises(FghashError) as e:
        read_features(tmp_path / "c.h5", splits=("database",))
    msg = str(e.value)
    assert "/database/features is missing" in msg and "fghash encode RUN --features backbone" in msg
    with pytest.raises(FghashError, match="no such file"):
        read_features(tmp_path / "nope.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(FghashError, match="not an HDF5 file"):
        read_features(tmp_path / "text.h5")


def test_write_features_rejects_bad_input_and_keeps_the_old_file(tmp_path):
    p = write_features(tmp_path / "f.h5", split_sets(), kind="backbone")
    before = p.read_bytes()
    bad = split_sets()
    bad["query"].features[0, 0] = np.nan
    with pytest.raises(FghashError, match="NaN"):
        write_features(p, bad, kind="backbone")
    with pytest.raises(FghashError, match="already exists"):
        write_features(p, split_sets(), kind="backbone", overwrite=False)
    assert p.read_bytes() == before


# -- run_baseline and the CLI ---------------------------------------------------------


def test_parse_bits_and_output_names(tmp_path):
    assert parse_bits("12, 24,32") == [12, 24, 32]
    assert parse_bits(48) == [48]
    for bad in ("12,x", "0", "2000", "12,12", ""):
        with pytest.raises(FghashError, match="--bits"):
            parse_bits(bad)
    out = tmp_path / "codes.h5"
    assert output_paths(out, [32]) == [out]
    assert output_paths(out, [12, 24]) == [tmp_path / "codes-12.h5", tmp_path / "codes-24.h5"]


@pytest.mark.parametrize("method", ["itq", "lsh", "pcah", "sdh"])
def test_cli_writes_valid_codes_files_that_retrieve_better_than_random(tmp_path, method):
    feats = split_sets(seed=11)
    fpath = write_features(
        tmp_path / "feats.h5", feats, kind="backbone", attrs={"config": {"dataset": "cub200"}}
    )
    out = tmp_path / "codes.h5"
    res = CliRunner().invoke(
        main,
        ["baseline", method, "--features", str(fpath), "--bits", "8,16", "--out", str(out)],
    )
    assert res.exit_code == 0, res.output
    assert "codes-8.h5" in res.output and "codes-16.h5" in res.output
    assert not out.exists()
    db, q = feats["database"], feats["query"]
    for bits in (8, 16):
        cf = read_codes(tmp_path / f"codes-{bits}.h5")
        assert cf.bits == bits and cf.method == method
        assert cf.config["features"]["checksum"] == file_checksum(fpath)
        assert cf.config["params"]["bits"] == bits and cf.config["seed"] == 0
        assert cf.config["dataset"] == "cub200"  # carried over, so tables group by data set
        np.testing.assert_array_equal(cf["database"].ids, db.ids)
        np.testing.assert_array_equal(cf["database"].labels, db.labels)
        np.testing.assert_array_equal(cf["query"].features, q.features)
        assert cf["query"].features_kind == "backbone"
        assert cf["query"].paths == q.paths
        # Same codes as fitting the model directly on the database features.
        direct = create_baseline(method, bits, seed=0).fit(db.features, db.labels)
        np.testing.assert_array_equal(cf["query"].codes, direct.encode(q.features))
        sd = unpack_bits(cf["database"].codes, bits).astype(np.int64) * 2 - 1
        sq = unpack_bits(cf["query"].codes, bits).astype(np.int64) * 2 - 1
        got = hamming_map(sq, sd, q.labels, db.labels)
        rng = np.random.default_rng(bits)
        chance = hamming_map(
            rng.choice([-1, 1], size=sq.shape),
            rng.choice([-1, 1], size=sd.shape),
            q.labels,
            db.labels,
        )
        assert got > chance + 0.25, (got, chance)


def test_cli_single_bits_writes_exactly_out_and_respects_force(tmp_path):
    fpath = write_features(tmp_path / "feats.h5", split_sets(), kind="backbone")
    out = tmp_path / "codes.h5"
    args = ["baseline", "ITQ", "--features", str(fpath), "--bits", "12", "--out", str(out)]
    args += ["--format", "jsonl"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip()) == {"method": "itq", "bits": 12, "path": str(out)}
    assert read_codes(out).bits == 12
    before = out.read_bytes()
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "already exists" in r.output and "--force" in r.output
    assert out.read_bytes() == before
    r = CliRunner().invoke(main, [*args, "--force", "--seed", "3"])
    assert r.exit_code == 0, r.output
    assert read_codes(out).config["seed"] == 3


def test_cli_errors_exit_2_with_one_sentence(tmp_path):
    run = CliRunner().invoke
    # A codes file without features.
    nofeat = tmp_path / "nofeat.h5"
    write_codes(nofeat, make_codes_file(8, Split(codes=np.zeros((10, 1), np.uint8))))
    r = run(
        main,
        [
            "baseline",
            "itq",
            "--features",
            str(nofeat),
            "--bits",
            "8",
            "--out",
            str(tmp_path / "o.h5"),
        ],
    )
    assert r.exit_code == 2
    assert "features" in r.output and "fghash encode RUN --features backbone" in r.output
    assert "Traceback" not in r.output

    # SDH on a features file without labels.
    unl = {k: FeatureSplit(v.features) for k, v in split_sets().items()}
    fpath = write_features(tmp_path / "unlabelled.h5", unl, kind="backbone")
    r = run(
        main,
        [
            "baseline",
            "sdh",
            "--features",
            str(fpath),
            "--bits",
            "8",
            "--out",
            str(tmp_path / "o.h5"),
        ],
    )
    assert r.exit_code == 2 and "supervised" in r.output and "labels" in r.output

    labelled = write_features(tmp_path / "f.h5", split_sets(), kind="backbone")
    for bits, text in [("12,abc", "comma-separated"), ("0", "from 1 to"), ("16,16", "twice")]:
        r = run(
            main,
            [
                "baseline",
                "lsh",
                "--features",
                str(labelled),
                "--bits",
                bits,
                "--out",
                str(tmp_path / "o.h5"),
            ],
        )
        assert r.exit_code == 2 and "--bits" in r.output and text in r.output, r.output
    # More bits than feature dimensions for a PCA method, found before anything is written.
    r = run(
        main,
        [
            "baseline",
            "pcah",
            "--features",
            str(labelled),
            "--bits",
            "8,64",
            "--out",
            str(tmp_path / "o.h5"),
        ],
    )
    assert r.exit_code == 2 and "at least 64 dimensions" in r.output
    assert not (tmp_path / "o-8.h5").exists()
    r = run(
        main, ["baseline", "nope", "--features", str(labelled), "--out", str(tmp_path / "o.h5")]
    )
    assert r.exit_code == 2
    assert not list(tmp_path.glob("o*.h5"))


def test_run_baseline_rejects_unknown_parameters_before_reading(tmp_path):
    with pytest.raises(FghashError, match="no parameter"):
        run_baseline("pcah", tmp_path / "absent.h5", [8], tmp_path / "o.h5", n_iter=3)


def test_every_command_here_has_help():
    r = CliRunner().invoke(main, ["baseline", "--help"])
    assert r.exit_code == 0 and "METHOD" in r.output and "codes-12.h5" in r.output
    for m in list_baselines():
        assert m in r.output
