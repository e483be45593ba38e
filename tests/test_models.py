"""Model registry, shapes of every variant, branch wiring, gradients, weights loading."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch.utils._python_dispatch import TorchDispatchMode

import fghash.models.a2net as a2net_module
from fghash.errors import FghashError
from fghash.models import A2Net, create_model, list_models
from fghash.models.a2net import attended
from fghash.training.adsh import init_database_codes, similarity_matrix
from fghash.training.losses import A2NetLoss

BITS, M, SIZE = 12, 4, 32
TINY = {"bits": BITS, "backbone": "resnet18", "num_attention": M, "image_size": SIZE}


def tiny(name="a2net", **kw):
    torch.manual_seed(0)
    return create_model(name, **{**TINY, **kw})


def test_registry_lists_the_variants():
    assert {"a2net", "a2net_efficient", "adsh", "dpsh", "hashnet"} <= set(list_models())


def test_unknown_model_names_the_choices():
    with pytest.raises(FghashError, match="a2net.*adsh"):
        create_model("a3net", bits=12)


def test_bad_arguments_raise_one_sentence():
    with pytest.raises(FghashError, match="backbone"):
        create_model("a2net", bits=12, backbone="vgg16")
    with pytest.raises(FghashError, match="bits"):
        create_model("a2net", bits=0, backbone="resnet18")
    with pytest.raises(FghashError, match="unknown weights"):
        create_model("adsh", bits=12, backbone="resnet18", weights="IMAGENET9K")
    with pytest.raises(FghashError, match="unknown model option 'num_atention'"):
        create_model("a2net", bits=12, num_atention=3)


@pytest.mark.parametrize("self_consistency", [False, True])
@pytest.mark.parametrize("name", list_models())
def test_output_shapes(name, self_consistency):
    model = tiny(name, self_consistency=self_consistency)
    images = torch.randn(2, 3, SIZE, SIZE)
    out = model(images)
    attention = model.use_attention
    d = (M + 1) * 512 if attention else 512
    assert model.feature_dim == d
    assert out.v.shape == (2, BITS) and out.relaxed.shape == (2, BITS)
    assert out.x.shape == (2, d) and out.x_rec.shape == (2, d)
    assert torch.allclose(out.relaxed, torch.tanh(out.v))
    for i in range(2):  # tied decoder: x̂_i = Wᵀ tanh(v_i)
        assert torch.allclose(out.x_rec[i], model.W.T @ out.relaxed[i], atol=1e-5)
    if self_consistency:
        assert out.image_rec.shape == (2, 3, SIZE, SIZE)
    else:
        assert out.image_rec is None
    if attention:
        assert out.attention.shape == (2, M, SIZE // 16, SIZE // 16)
        assert (out.attention >= 0).all()
    else:
        assert out.attention is None
    json.dumps(model.config)
    again = create_model(name, **model.config)
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


def test_num_attention_defaults_to_bits_and_none_is_dropped():
    model = create_model("a2net", bits=6, backbone="resnet18", num_attention=None, image_size=SIZE)
    assert model.config["num_attention"] == 6
    assert model.feature_dim == 7 * 512
    assert model.model_name == "a2net"


def test_decoder_follows_the_input_size():
    model = tiny("a2net_efficient", self_consistency=True)
    out = model(torch.randn(2, 3, 48, 64))
    assert out.image_rec.shape == (2, 3, 48, 64)


def test_faithful_local_branch_is_one_shared_layer4_per_map():
    model = tiny("a2net").eval()
    img = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        out = model(img)
        t = model.trunk(img)
        a = model.attention_net(t)
        pieces = [model.layer4_local(a[:, m : m + 1] * t).mean(dim=(2, 3)) for m in range(M)]
        pieces.append(model.layer4_global(t).mean(dim=(2, 3)))
    assert torch.allclose(out.x, torch.cat(pieces, dim=1), atol=1e-5)
    assert sum(1 for n, _ in model.named_children() if n.startswith("layer4")) == 2


def test_efficient_branch_pools_one_layer4_map():
    model = tiny("a2net_efficient").eval()
    img = torch.randn(1, 3, SIZE * 2, SIZE * 2)  # layer3 4×4, layer4 2×2
    with torch.no_grad():
        out = model(img)
        t = model.trunk(img)
        f = model.layer4_global(t)[0]  # [C, 2, 2]
        a = model.attention_net(t)[0]  # [M, 4, 4]
        pieces = []
        for m in range(M):
            acc = torch.zeros(f.shape[0])
            for p in range(2):
                for q in range(2):
                    weight = a[m, 2 * p : 2 * p + 2, 2 * q : 2 * q + 2].mean()
                    acc += weight * f[:, p, q]
            pieces.append(acc / 4)
        pieces.append(f.mean(dim=(1, 2)))
    assert torch.allclose(out.x[0], torch.cat(pieces), atol=1e-5)
    assert not hasattr(model, "layer4_local")


def test_encode_and_codes():
    model = tiny("a2net").eval()
    images = torch.randn(3, 3, SIZE, SIZE)
    relaxed = model.encode(images)
    assert not relaxed.requires_grad
    with torch.no_grad():
        assert torch.allclose(relaxed, model(images).relaxed, atol=1e-6)
    codes = model.codes(images)
    assert torch.equal(codes, torch.where(relaxed >= 0, 1.0, -1.0))


def _batch():
    images = torch.randn(4, 3, SIZE, SIZE)
    S = similarity_matrix(torch.tensor([0, 1, 0, 1]), torch.tensor([0, 1, 0, 1, 1, 0]))
    B = init_database_codes(6, BITS, seed=1)
    return images, S, B, B[torch.tensor([0, 1, 2, 3])]


@pytest.mark.parametrize("name", ["a2net", "a2net_efficient", "adsh"])
def test_full_loss_reaches_every_parameter(name):
    model = tiny(name, self_consistency=True)
    images, S, B, B_om = _batch()
    loss, _ = A2NetLoss(BITS, self_consistency=True)(model(images), images, S, B, B_om)
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []
    groups = {n.split(".")[0] for n, _ in model.named_parameters()}
    expect = {"W", "trunk", "layer4_global", "decoder", "decoder_code"}
    if name != "adsh":
        expect.add("attention_net")
    if name == "a2net":
        expect.add("layer4_local")
    assert groups == expect


def test_terms_reach_only_their_parameters():
    model = tiny("a2net", self_consistency=True)
    images, S, B, B_om = _batch()
    only_image = A2NetLoss(BITS, False, False, False, False, self_consistency=True)
    only_image(model(images), images, S, B, B_om)[0].backward()
    assert model.W.grad is not None  # through the second generator, from Wᵀ tanh(W x)
    assert model.layer4_local[0].conv1.weight.grad is not None
    model.zero_grad(set_to_none=True)
    only_hash = A2NetLoss(BITS, reconstruction=False, decorrelation=False)
    only_hash(model(images), images, S, B, B_om)[0].backward()
    assert all(p.grad is None for p in model.decoder.parameters())
    assert model.W.grad is not None and model.attention_net[0].conv1.weight.grad is not None


def test_second_image_path_reaches_W_and_the_first_does_not():
    """Journal self-consistency: Î = G₁(x) and Î′ = G₂(Wᵀ tanh(W x)). The gradient of
    mean((Î′ − I)²) with respect to W, written out by hand through dret: with
    g = ∂L/∂dret (from autograd through G₂ alone), dret = tanh(v) W, v = W x:
    ∂L/∂W = tanh(v)ᵀ g + ((g Wᵀ) ⊙ (1 − tanh²v))ᵀ x."""
    model = tiny("a2net", self_consistency=True).eval()  # eval: BN fixed, batch-independent
    images = torch.randn(2, 3, SIZE, SIZE)
    (g_first,) = torch.autograd.grad(
        F.mse_loss(model(images).image_rec, images), model.W, allow_unused=True
    )
    assert g_first is None  # G₁ starts from x, before the hash layer
    x = model(images).x.detach()
    v = x @ model.W.T
    r = torch.tanh(v)
    dret = (r @ model.W).detach().requires_grad_(True)
    loss_dret = F.mse_loss(model.decoder_code(dret, (SIZE, SIZE)), images)
    (g,) = torch.autograd.grad(loss_dret, dret)
    by_hand = r.T @ g + ((g @ model.W.T) * (1 - r**2)).T @ x
    # autograd through the model, with the features held fixed (x does not depend on W)
    W = model.W
    img2 = model.decoder_code(torch.tanh(x @ W.T) @ W, (SIZE, SIZE))
    (g_model,) = torch.autograd.grad(F.mse_loss(img2, images), W)
    assert g_model.abs().sum() > 0
    assert torch.allclose(g_model, by_hand.detach(), atol=1e-6, rtol=1e-4)
    # and the full model's image term (both generators) gives W exactly this gradient
    only_image = A2NetLoss(BITS, False, False, False, False, self_consistency=True)
    only_image.image_loss.weight = 1.0
    out = model(images)
    (g_full,) = torch.autograd.grad(only_image(out, images, None, None, None)[0], W)
    assert torch.allclose(g_full, by_hand.detach(), atol=1e-6, rtol=1e-4)


def test_weights_from_a_local_state_dict(tmp_path):
    torch.manual_seed(7)
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    model = create_model("a2net", weights=str(path), **TINY)
    assert model.config["weights"] == str(path)
    assert torch.equal(model.trunk[0].weight, ref.conv1.weight)
    for copy in (model.layer4_global, model.layer4_local):
        assert torch.equal(copy[1].conv2.weight, ref.layer4[1].conv2.weight)
    assert (
        model.layer4_global[0].conv1.weight.data_ptr()
        != model.layer4_local[0].conv1.weight.data_ptr()
    )


def test_weights_file_problems(tmp_path):
    with pytest.raises(FghashError, match="does not exist"):
        create_model("adsh", weights=str(tmp_path / "missing.pth"), **TINY)
    wrong = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), wrong)
    with pytest.raises(FghashError, match="does not fit"):
        create_model("adsh", weights=str(wrong), **TINY)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(FghashError, match="could not be read"):
        create_model("adsh", weights=str(junk), **TINY)


def test_images_must_be_rgb_batches():
    model = tiny("adsh")
    with pytest.raises(FghashError, match=r"\[B, 3, H, W\]"):
        model(torch.randn(3, SIZE, SIZE))
    assert isinstance(model, A2Net)


def test_imagenet_weights_without_network_say_how_to_get_them(monkeypatch, tmp_path):
    """No network and no cached file: one sentence naming the file, a local path or none."""
    import urllib.error

    import torchvision.models._api as api

    def offline(url, *a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FghashError) as e:
        create_model("adsh", bits=8, backbone="resnet18", weights="IMAGENET1K_V1")
    msg = str(e.value)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(cached) in msg and "https://download.pytorch.org/models/" in msg
    assert "--weights none" in msg and "--weights PATH" in msg and "\n" not in msg


@pytest.mark.parametrize("name", list_models())
def test_hash_head_runs_in_float32_under_bfloat16_autocast(name):
    """The backbone runs in bfloat16 under autocast, the head in float32 on its features."""
    model = tiny(name).eval()
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        feats, _ = model.features(images)
        out = model(images)
        relaxed, x = model.embed(images)
    assert feats.dtype == torch.bfloat16  # else this test would test nothing
    for t in (out.v, out.relaxed, out.x, out.x_rec, relaxed, x):
        assert t.dtype == torch.float32
    x64, w64 = feats.double(), model.W.detach().double()
    v64 = x64 @ w64.T  # the head in float64 on the same bf16-produced features
    torch.testing.assert_close(out.x, feats.float(), rtol=0, atol=0)
    torch.testing.assert_close(out.v.double(), v64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.relaxed.double(), torch.tanh(v64), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.x_rec.double(), torch.tanh(v64) @ w64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(relaxed, out.relaxed, rtol=0, atol=0)


def test_tanh_of_the_head_does_not_saturate_at_five_under_bfloat16_autocast():
    """In bfloat16 tanh(5) rounds to exactly 1 and its gradient to 0; in float32 it does not."""
    model = tiny("adsh")
    with torch.no_grad():
        model.W.zero_()
        model.W[0, 0] = 1.0
    x = torch.zeros(1, model.feature_dim, dtype=torch.bfloat16)
    x[0, 0] = 5.0  # v_0 = 5 exactly
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v, relaxed, _, _ = model.hash_head(x)
        relaxed[0, 0].backward()
    assert torch.tanh(torch.tensor(5.0, dtype=torch.bfloat16)) == 1.0  # what bf16 would give
    assert v[0, 0].item() == 5.0
    assert relaxed[0, 0].item() == pytest.approx(math.tanh(5.0), abs=1e-7)
    assert relaxed[0, 0].item() < 1.0
    # d tanh(W x)_0 / dW_00 = (1 - tanh²(5)) · 5
    assert model.W.grad[0, 0].item() == pytest.approx((1 - math.tanh(5.0) ** 2) * 5, rel=1e-4)


def _paper_products(a, t):
    return (a.unsqueeze(2) * t.unsqueeze(1)).flatten(0, 1)


class _WriteCounter(TorchDispatchMode):
    """The distinct memory blocks written for tensors of ``numel`` elements (a view shares
    its base's block)."""

    def __init__(self, numel):
        super().__init__()
        self.numel, self.blocks = numel, set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and out.numel() == self.numel:
            self.blocks.add(out.untyped_storage().data_ptr())
        return out


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_attention_products_equal_the_paper_expression_written_once(fmt):
    a = torch.rand(2, 3, 5, 4).contiguous(memory_format=fmt)
    t = torch.randn(2, 8, 5, 4).contiguous(memory_format=fmt)
    want = _paper_products(a, t)
    counter = _WriteCounter(want.numel())
    with counter:
        got = attended(a, t)
    assert torch.equal(got, want)
    assert got.is_contiguous(memory_format=fmt)  # φ_l's convolution takes it as it is
    assert len(counter.blocks) == 1
    if fmt == torch.channels_last:  # the old expression: product, NCHW copy (then φ_l's)
        counter = _WriteCounter(want.numel())
        with counter:
            old = _paper_products(a, t)
        assert len(counter.blocks) == 2 and not old.is_contiguous(memory_format=fmt)


def test_channels_last_faithful_forward_equals_the_paper_expression(monkeypatch):
    """The whole faithful network in channels-last: same features and gradients as with
    the old product expression."""
    model = tiny("a2net").to(memory_format=torch.channels_last)
    images = torch.randn(2, 3, SIZE, SIZE).contiguous(memory_format=torch.channels_last)

    def run():
        model.zero_grad()
        out = model(images)
        out.relaxed.sum().backward()
        return out.x.detach(), model.attention_net[-3].weight.grad.clone()

    x_new, g_new = run()
    monkeypatch.setattr(a2net_module, "attended", _paper_products)
    x_old, g_old = run()
    torch.testing.assert_close(x_new, x_old, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g_new, g_old, rtol=1e-5, atol=1e-6)
