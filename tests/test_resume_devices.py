"""Resuming on another device: checkpoint tensors in another memory format, fewer GPUs.

On CUDA the model is channels-last and SGD is fused; on the CPU the model is contiguous.
A checkpoint keeps the layout it was written in, so a resume on the other device meets
momentum buffers whose strides differ from their parameters'. The CPU has both layouts
and a fused SGD, so the mechanism is tested here: the channels-last choice is forced on
the CPU by replacing the training loop's ``prepare_model``, and a checkpoint "written on
the other device" is the same checkpoint with its tensors converted to the other layout.
The GPU's own fused kernel is checked by ``bench/gpu_check.py``.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from fghash.data import generate_synthetic
from fghash.runs import checkpoint as ckpt_mod
from fghash.runs.checkpoint import load_checkpoint, save_checkpoint
from fghash.runs.folder import CHECKPOINT, build_model
from fghash.training import loop as loop_mod
from fghash.training.step import Optimisation
from tests.test_train import tiny

CL, CONTIGUOUS = torch.channels_last, torch.contiguous_format


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "birds"
    return generate_synthetic(
        root, num_classes=4, train_per_class=4, test_per_class=2, image_size=32, seed=0
    )


def in_layout(t, fmt):
    """``t`` with the same values in memory format ``fmt`` (4-D tensors only)."""
    return t.contiguous(memory_format=fmt) if torch.is_tensor(t) and t.dim() == 4 else t


def optimisation(cfg, fmt):
    model = build_model(cfg).to(memory_format=fmt)
    return Optimisation(cfg, model, model, torch.device("cpu"), None)


def random_grads(opt, seed):
    g = torch.Generator().manual_seed(seed)
    for p in opt.model.parameters():
        p.grad = torch.randn(p.shape, generator=g).contiguous(memory_format=_fmt(p))


def _fmt(p):
    return CL if p.dim() == 4 and p.is_contiguous(memory_format=CL) else CONTIGUOUS


@pytest.mark.parametrize("saved, resumed", [(CL, CONTIGUOUS), (CONTIGUOUS, CL)])
def test_restored_momentum_takes_the_parameter_layout_and_steps_as_sgd(data_root, saved, resumed):
    """After a restore into the other layout, one fused SGD step equals SGD's update
    written out by hand in float64 (Nesterov momentum with weight decay)."""
    cfg = tiny(data_root)
    first = optimisation(cfg, saved)
    if not first.optimizer.defaults.get("fused"):
        pytest.skip("this torch has no fused SGD on the CPU")
    for seed in (1, 2):  # two steps: the momentum buffers are non-trivial
        random_grads(first, seed)
        first.optimizer.step()
    state = {**first.state_dict(), "config": json.dumps(cfg.to_dict())}

    second = optimisation(cfg, resumed)
    second.load_state_dict(state)
    params = list(second.model.parameters())
    bufs = [second.optimizer.state[p]["momentum_buffer"] for p in params]
    for p, buf, q in zip(params, bufs, first.model.parameters(), strict=True):
        assert buf.stride() == p.stride()
        assert p.stride() == in_layout(p, resumed).stride()  # the model kept its layout
        assert torch.equal(p.detach(), q.detach())
    want = []
    random_grads(second, 3)
    lr, mu, wd = cfg.lr, cfg.momentum, cfg.weight_decay
    for p, buf in zip(params, bufs, strict=True):
        w, g, b = p.detach().double(), p.grad.double(), buf.double()
        d = g + wd * w
        b = mu * b + d
        want.append(w - lr * ((d + mu * b) if cfg.nesterov else b))
    second.optimizer.step()
    worst = max(
        (p.detach().double() - w).abs().max().item() for p, w in zip(params, want, strict=True)
    )
    assert worst < 1e-6


REAL_PREPARE = loop_mod.prepare_model


def _train_in(monkeypatch, fmt, cfg, run, **kw):
    """``train`` with the model in memory format ``fmt`` (the CUDA choice forced on CPU)."""
    monkeypatch.setattr(
        loop_mod, "prepare_model", lambda m, d: REAL_PREPARE(m, d).to(memory_format=fmt)
    )
    return loop_mod.train(cfg, run, progress=False, **kw)


@pytest.mark.parametrize("layout", ["contiguous", "channels-last"])
def test_resume_from_a_checkpoint_in_the_other_layout_is_exact(
    data_root, tmp_path, monkeypatch, layout
):
    """A run in one layout resumed from a checkpoint whose tensors are in the other (as
    one written on the other device) ends bit for bit where the uninterrupted run ends."""
    fmt, other = (CONTIGUOUS, CL) if layout == "contiguous" else (CL, CONTIGUOUS)
    two = tiny(data_root, max_iter=2)
    _train_in(monkeypatch, fmt, two, tmp_path / "straight")
    _train_in(monkeypatch, fmt, tiny(data_root, max_iter=1), tmp_path / "split")
    state = load_checkpoint(tmp_path / "split" / CHECKPOINT)
    state["model"] = {k: in_layout(v, other) for k, v in state["model"].items()}
    for entry in state["optimizer"]["state"].values():
        entry["momentum_buffer"] = in_layout(entry["momentum_buffer"], other)
    assert any(
        v.dim() == 4 and v.stride() != in_layout(v, fmt).stride() for v in state["model"].values()
    )
    save_checkpoint(tmp_path / "split" / CHECKPOINT, state)
    _train_in(monkeypatch, fmt, two, tmp_path / "split", resume=True)

    a = load_checkpoint(tmp_path / "straight" / CHECKPOINT)
    b = load_checkpoint(tmp_path / "split" / CHECKPOINT)
    assert torch.equal(a["B"], b["B"])
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for key, entry in a["optimizer"]["state"].items():
        assert torch.equal(
            entry["momentum_buffer"], b["optimizer"]["state"][key]["momentum_buffer"]
        )
    assert np.array_equal(
        np.load(tmp_path / "straight" / "database_codes.npy"),
        np.load(tmp_path / "split" / "database_codes.npy"),
    )


def _fake_gpus(monkeypatch, count, log):
    """``count`` visible GPUs whose generator states are recorded in ``log`` by index; the
    real ``set_rng_state_all`` runs over the fake ``set_rng_state``, which raises for an
    index past ``count`` as torch does for a GPU that is not there."""
    import torch.cuda.random as cuda_random

    def set_state(state, device=0):
        if int(device) >= count:
            raise IndexError(f"device {device} of {count}")
        log[int(device)] = bytes(state.numpy())

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(cuda_random, "device_count", lambda: count)
    monkeypatch.setattr(cuda_random, "set_rng_state", set_state)
    monkeypatch.setattr(
        torch.cuda,
        "get_rng_state_all",
        lambda: [torch.full((16,), i, dtype=torch.uint8) for i in range(count)],
    )


@pytest.mark.parametrize("saved, visible", [(8, 1), (8, 8), (2, 4)])
def test_rng_states_restore_onto_the_gpus_that_are_visible(monkeypatch, caplog, saved, visible):
    _fake_gpus(monkeypatch, saved, {})
    state = ckpt_mod.capture_rng_state()
    assert len(state["cuda"]) == saved
    restored: dict[int, bytes] = {}
    _fake_gpus(monkeypatch, visible, restored)
    with caplog.at_level(logging.INFO, logger=ckpt_mod.__name__):
        ckpt_mod.restore_rng_state(state)
    n = min(saved, visible)
    assert restored == {i: bytes([i] * 16) for i in range(n)}
    said = [r.getMessage() for r in caplog.records if "random states" in r.getMessage()]
    assert said == (
        []
        if saved == visible
        else [
            f"checkpoint holds random states of {saved} GPU(s), {visible} visible now: restoring {n}"
        ]
    )
