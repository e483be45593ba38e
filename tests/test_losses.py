"""Loss values against hand-worked cases and plain loops; input validation; training lowers the loss."""

from __future__ import annotations

import math

import pytest
import torch

from fghash.errors import FghashError
from fghash.models import HashOutput, create_model
from fghash.training.adsh import init_database_codes, similarity_matrix
from fghash.training.losses import (
    A2NetLoss,
    AsymmetricHashLoss,
    DecorrelationLoss,
    DPSHLoss,
    FeatureReconstructionLoss,
    HashNetLoss,
    ImageReconstructionLoss,
    QuantizationLoss,
)

# A 2-item batch, k = 2 bits, a database of N = 3 codes.
U = torch.tensor([[0.5, -0.5], [1.0, 0.0]])
B_DB = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
S = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
B_OMEGA = torch.tensor([[1.0, -1.0], [1.0, 1.0]])


def hand_output():
    v = torch.tensor([[0.3, -2.0], [1.5, 0.1]])
    x = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0]])
    x_rec = torch.tensor([[0.5, 2.0, 1.0], [0.0, 0.0, -1.0]])
    img = torch.full((2, 3, 2, 2), 0.5)
    return HashOutput(v=v, relaxed=U.clone(), x=x, x_rec=x_rec, image_rec=img, attention=None)


def test_asymmetric_hash_loss_by_hand():
    # u·b: row 1 = (0, 1, 0), row 2 = (1, 1, -1); k·S̃ = [[2,-2,-2],[-2,2,2]]
    # residuals (-2, 3, 2) and (3, -1, -3): squares 17 + 19 = 36; β/(nN) = (12/2)/6 = 1.
    assert float(AsymmetricHashLoss(2)(U, S, B_DB)) == pytest.approx(36.0)
    assert float(AsymmetricHashLoss(2, beta=3.0)(U, S, B_DB)) == pytest.approx(18.0)


def test_asymmetric_soft_targets_by_loops():
    S1 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # P = 2, D = 4: dissimilar -> -0.5
    total = 0.0
    for i in range(2):
        for j in range(3):
            t = 1.0 if S1[i, j] else -0.5
            dot = sum(float(U[i, b] * B_DB[j, b]) for b in range(2))
            total += (dot - 2 * t) ** 2
    want = 6.0 / 6.0 * total
    assert float(AsymmetricHashLoss(2, soft_similarity=True)(U, S1, B_DB)) == pytest.approx(want)


def test_quantization_loss_by_hand():
    # ‖u1 − b1‖² = 0.25 + 0.25, ‖u2 − b2‖² = 0 + 1 → 1.5; γβ/(nN) = 200·6/6 = 200.
    assert float(QuantizationLoss(2)(U, B_OMEGA, 3)) == pytest.approx(300.0)


def test_decorrelation_loss_by_hand():
    # UᵀU = [[1.25, -0.25], [-0.25, 0.25]]; minus 2I, squared: 0.5625 + 2·0.0625 + 3.0625 = 3.75;
    # mean over 4 entries 0.9375; α = 1/(n·k) = 1/4.
    assert float(DecorrelationLoss()(U)) == pytest.approx(0.234375)
    assert float(DecorrelationLoss(alpha=1.0)(U)) == pytest.approx(0.9375)


def test_feature_reconstruction_by_loops():
    out = hand_output()
    first = (
        sum((float(out.x[i, d]) - float(out.x_rec[i, d])) ** 2 for i in range(2) for d in range(3))
        / 6
    )
    second = sum((float(out.v[i, b]) - float(U[i, b])) ** 2 for i in range(2) for b in range(2)) / 4
    assert first == pytest.approx(2.25 / 6)  # (0.5, 0, -1) and (0, 1, 0)
    got = FeatureReconstructionLoss()(out.x, out.x_rec, out.v, out.relaxed)
    assert float(got) == pytest.approx(first + second)
    assert float(
        FeatureReconstructionLoss(lam=0.0)(out.x, out.x_rec, out.v, out.relaxed)
    ) == pytest.approx(first)


def test_image_loss_by_hand():
    rec = torch.full((2, 3, 2, 2), 0.5)
    img = torch.zeros(2, 3, 2, 2)
    assert float(ImageReconstructionLoss(weight=0.01)(rec, img)) == pytest.approx(0.0025)


def test_a2net_loss_sums_enabled_terms_and_ablates_by_flags():
    out = hand_output()
    img = torch.zeros(2, 3, 2, 2)
    rec = FeatureReconstructionLoss()(out.x, out.x_rec, out.v, out.relaxed).item()
    full = A2NetLoss(2, self_consistency=True)
    loss, parts = full(out, img, S, B_DB, B_OMEGA)
    assert parts["hash"] == pytest.approx(36.0)
    assert parts["quantization"] == pytest.approx(300.0)
    assert parts["decorrelation"] == pytest.approx(0.234375)
    assert parts["image"] == pytest.approx(0.0025)
    assert parts["reconstruction"] == pytest.approx(rec)
    assert float(loss) == pytest.approx(36.0 + 300.0 + 0.234375 + 0.0025 + rec)
    assert parts["total"] == pytest.approx(float(loss))

    adsh_only = A2NetLoss(2, reconstruction=False, decorrelation=False)
    loss, parts = adsh_only(out, None, S, B_DB, B_OMEGA)
    assert set(parts) == {"hash", "quantization", "total"}
    assert float(loss) == pytest.approx(336.0)

    unsup = A2NetLoss(2, asymmetric=False, quantization=False)  # database inputs not needed
    loss, parts = unsup(out, None, None, None, None)
    assert set(parts) == {"reconstruction", "decorrelation", "total"}
    assert float(loss) == pytest.approx(rec + 0.234375)


def test_a2net_loss_rejects_bad_input():
    out = hand_output()
    crit = A2NetLoss(2)
    with pytest.raises(FghashError, match="shape"):
        crit(out, None, S[:, :2], B_DB, B_OMEGA)
    with pytest.raises(FghashError, match="only 0 and 1"):
        crit(out, None, S * 0.5, B_DB, B_OMEGA)
    bad = hand_output()
    bad.relaxed[0, 0] = float("nan")
    with pytest.raises(FghashError, match="NaN"):
        crit(bad, None, S, B_DB, B_OMEGA)
    with pytest.raises(FghashError, match="self_consistency"):
        A2NetLoss(2, self_consistency=True)(
            HashOutput(out.v, out.relaxed, out.x, out.x_rec, None, None),
            torch.zeros(2, 3, 2, 2),
            S,
            B_DB,
            B_OMEGA,
        )
    with pytest.raises(FghashError, match="switched off"):
        A2NetLoss(2, False, False, False, False)(out, None, S, B_DB, B_OMEGA)
    with pytest.raises(FghashError, match="HashOutput"):
        crit(U, None, S, B_DB, B_OMEGA)


def test_dpsh_loss_by_loops():
    out = hand_output()
    u = out.v
    Sb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    like = 0.0
    for i in range(2):
        for j in range(2):
            theta = 0.5 * sum(float(u[i, b] * u[j, b]) for b in range(2))
            like += math.log(1 + math.exp(theta)) - float(Sb[i, j]) * theta
    like /= 4
    quant = (
        sum(
            (float(u[i, b]) - (1.0 if u[i, b] >= 0 else -1.0)) ** 2
            for i in range(2)
            for b in range(2)
        )
        / 4
    )
    loss, parts = DPSHLoss(2, eta=0.1)(out, None, Sb)
    assert float(loss) == pytest.approx(like + 0.1 * quant)
    assert parts["likelihood"] == pytest.approx(like)
    # With a memory bank the pairs are batch × bank.
    bank = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]])
    like_bank = 0.0
    for i in range(2):
        for j in range(3):
            theta = 0.5 * sum(float(u[i, b] * bank[j, b]) for b in range(2))
            like_bank += math.log(1 + math.exp(theta)) - float(S[i, j]) * theta
    loss, parts = DPSHLoss(2, eta=0.0)(out, None, S, bank)
    assert float(loss) == pytest.approx(like_bank / 6)


def test_hashnet_loss_by_loops_and_continuation():
    out = hand_output()
    crit = HashNetLoss(2, step_size=200)
    alpha = 10 / 2
    h = [[math.tanh(float(x)) for x in row] for row in out.v]
    Sb = [[1.0, 0.0], [0.0, 1.0]]
    pos = 2
    neg = 2
    total = 0.0
    for i in range(2):
        for j in range(2):
            dot = alpha * sum(h[i][b] * h[j][b] for b in range(2))
            w = 4 / pos if Sb[i][j] else 4 / neg
            total += w * (math.log(1 + math.exp(dot)) - Sb[i][j] * dot)
    loss, parts = crit(out, None, torch.tensor(Sb))
    assert float(loss) == pytest.approx(total / 4)
    assert parts["scale"] == 1.0
    for _ in range(199):
        crit.step()
    assert crit.scale == 1.0
    crit.step()
    assert crit.scale == pytest.approx(math.sqrt(2.0))  # (1 + 0.005·200)^0.5
    assert int(crit.state_dict()["iteration"]) == 200


def test_a_few_steps_lower_a2net_loss():
    torch.manual_seed(0)
    model = create_model(
        "a2net", bits=12, backbone="resnet18", num_attention=4, image_size=32, self_consistency=True
    )
    images = torch.randn(4, 3, 32, 32)
    labels = torch.tensor([0, 1, 0, 2])
    db_labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    omega = torch.tensor([0, 1, 3, 2])
    S_b = similarity_matrix(labels, db_labels)
    B = init_database_codes(8, 12, seed=0)
    crit = A2NetLoss(12, self_consistency=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss, _ = crit(model(images), images, S_b, B, B[omega])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_hashnet_continuation_survives_save_and_restore():
    """The count is a plain int (no device sync per step) and travels in the state dict as
    the tensor ``iteration`` checkpoints have always held; the schedule after a restore is
    the hand-computed β_t = (1 + 0.005·⌊t/200⌋·200)^0.5."""

    def beta(t):
        return (1 + 0.005 * (t // 200 * 200)) ** 0.5

    crit = HashNetLoss(8, step_size=200)
    for _ in range(450):
        crit.step()
    assert isinstance(crit.iteration, int) and crit.scale == pytest.approx(beta(450))
    state = crit.state_dict()
    assert state["iteration"].dtype == torch.long and int(state["iteration"]) == 450

    again = HashNetLoss(8, step_size=200)
    again.load_state_dict(state)
    assert again.iteration == 450 and again.scale == pytest.approx(beta(450))
    for t in range(451, 651):
        again.step()
        assert again.scale == pytest.approx(beta(t)), t
    assert again.scale == pytest.approx(math.sqrt(1 + 0.005 * 600))

    old = {"iteration": torch.tensor(399)}  # a checkpoint of the buffer version
    restored = HashNetLoss(8)
    restored.load_state_dict(old)
    restored.step()
    assert restored.iteration == 400 and restored.scale == pytest.approx(math.sqrt(3.0))
    with pytest.raises(RuntimeError, match="iteration"):
        HashNetLoss(8).load_state_dict({})
