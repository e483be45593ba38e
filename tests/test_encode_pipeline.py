"""The encode loop's GPU choices made on a CPU: DataLoader options and worker counts for a
(faked) CUDA device, native-bfloat16 detection with faked torch.cuda answers, host copies
gathered once, and the same codes whatever the batch size and worker count."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import fghash.encoding.loop as loop
from fghash.models import create_model

CUDA = torch.device("cuda")  # a device object only: nothing here touches a GPU


def test_workers_come_from_the_cpu_count_on_a_gpu():
    assert loop.default_num_workers("cuda", cores=16) == 15
    assert loop.default_num_workers("cuda", cores=64) == 63  # no cap of 4
    assert loop.default_num_workers("cuda", cores=1) == 1
    assert loop.default_num_workers("cpu", cores=16) == 4
    assert loop.default_num_workers("cpu", cores=2) == 2


def test_loader_pins_host_memory_for_a_gpu_only():
    assert loop.loader_options(CUDA, 7) == {"num_workers": 7, "pin_memory": True}
    assert loop.loader_options(torch.device("cpu"), 0) == {"num_workers": 0, "pin_memory": False}
    dl = loop.image_loader([], [], batch_size=4, num_workers=0, device=CUDA)
    assert dl.pin_memory is True


def _cfg(dtype="bfloat16"):
    return SimpleNamespace(amp=True, amp_dtype=dtype)


def test_emulated_bfloat16_picks_float16(monkeypatch):
    """torch ≥ 2.3 says yes for emulated bfloat16 unless asked without emulation."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bool(
        including_emulation
    ))  # fmt: skip
    assert loop.amp_dtype(_cfg(), CUDA) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert loop.amp_dtype(_cfg(), CUDA) == torch.bfloat16
    assert loop.amp_dtype(_cfg("float16"), CUDA) == torch.float16


@pytest.mark.parametrize(("capability", "want"), [((7, 0), torch.float16),
    ((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])  # fmt: skip
def test_older_torch_decides_by_compute_capability(monkeypatch, capability, want):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)  # no such argument
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert loop.amp_dtype(_cfg(), CUDA) == want


def test_cpu_never_asks_the_gpu(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("asked torch.cuda on a CPU run")

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", fail)
    assert loop.eval_autocast(_cfg(), "cpu") is None
    assert loop.amp_dtype(_cfg(), torch.device("cpu")) == torch.bfloat16


def test_host_copies_gather_in_order():
    parts = [torch.randn(3, 5), torch.randn(0, 5), torch.randn(2, 5)]
    gathered = loop.HostCopies()
    for p in parts:
        gathered.add(p)
    got = gathered.numpy(np.zeros((0, 5), np.float32))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.concatenate([p.numpy() for p in parts]))
    empty = np.zeros((0, 5), np.float32)
    assert loop.HostCopies().numpy(empty) is empty


class _Images:
    """Nine fixed random images; item 4 is unreadable (``None``)."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(9, 3, 32, 32, generator=g)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return None if i == 4 else (self.images[i], 0, i)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return create_model("a2net", bits=12, backbone="resnet18", num_attention=2, image_size=32)


@pytest.mark.parametrize(("batch_size", "workers"), [(1, 0), (4, 0), (64, 0), (3, 2)])
def test_same_codes_whatever_the_batch_size_and_workers(net, batch_size, workers):
    ds = _Images()
    indices = np.array([8, 0, 4, 3, 1, 7, 2], dtype=np.int64)
    enc = loop.encode_images(
        net, ds, indices, batch_size=batch_size, num_workers=workers, features=True,
        progress=False,
    )  # fmt: skip
    readable = [p for p, i in enumerate(indices) if i != 4]
    assert enc.skipped == 1
    np.testing.assert_array_equal(enc.positions, readable)
    net.eval()
    with torch.no_grad():  # each image alone, through the model's own encode
        want = torch.cat([net.encode(ds.images[indices[p]][None]) for p in readable]).numpy()
        feats = torch.cat([net.features(ds.images[indices[p]][None])[0] for p in readable])
    np.testing.assert_allclose(enc.relaxed, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(enc.relaxed >= 0, want >= 0)
    np.testing.assert_allclose(enc.backbone, feats.numpy(), rtol=1e-4, atol=1e-4)
