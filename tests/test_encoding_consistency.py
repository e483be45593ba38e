"""One network-over-images loop: training validation, ``fghash encode`` and image queries
(``fghash search --image``, ``fghash.load``) give bit-identical codes for the same images
and run.

The validation codes are the ones the training run itself computed at its last
validation (recorded while it trains); its model then is the model of the checkpoint
the other paths load. The three paths are checked against each other and the codes
against an independent packing of the relaxed values' signs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fghash.encoding.loop as encoding_loop
from fghash.codes import read_codes
from fghash.data import generate_synthetic
from fghash.encoding.encode import encode_run
from fghash.encoding.image_query import encode_query_images
from fghash.runs.checkpoint import load_checkpoint
from fghash.runs.config import resolve_config
from fghash.runs.folder import CHECKPOINT
from fghash.training.loop import train

K = 12
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a GPU (autocast, pinned memory, channels-last)"
))]  # fmt: skip


def packed_signs(x):
    """Independent packing: bit i of item n is x[n, i] >= 0, little bit order per byte."""
    bits = (np.asarray(x) >= 0).astype(np.uint8)
    out = np.zeros((bits.shape[0], (bits.shape[1] + 7) // 8), dtype=np.uint8)
    for i in range(bits.shape[1]):
        out[:, i // 8] |= bits[:, i] << (i % 8)
    return out


@pytest.fixture(scope="module", params=DEVICES)
def trained(request, tmp_path_factory):
    """A tiny run (random-init ResNet-18, 32 px) and the relaxed codes its last validation
    computed for the held-out items."""
    device = request.param
    base = tmp_path_factory.mktemp(f"consistency-{device}")
    root = generate_synthetic(
        base / "birds", num_classes=3, train_per_class=4, test_per_class=2, image_size=32
    )
    cfg = resolve_config(
        "synthetic", "a2net", data_root=str(root), backbone="resnet18", weights="none",
        image_size=32, bits=K, num_attention=2, num_samples=9, batch_size=3, max_iter=2,
        epochs=1, device=device, gamma=1.0, lr=1e-3, val_fraction=0.25, eval_every=1,
    )  # fmt: skip
    seen = []
    real = encoding_loop.encode_images

    def recording(*args, **kwargs):
        enc = real(*args, **kwargs)
        if kwargs.get("desc") == "encoding val":
            seen.append(enc)
        return enc

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(encoding_loop, "encode_images", recording)
        run = base / "run"
        train(cfg, run, progress=False)
    assert len(seen) == 2  # one validation per outer iteration; the last one is compared
    return root, run, device, seen[-1]


def test_encode_validation_and_image_queries_give_the_same_codes(trained, tmp_path):
    root, run, device, validation = trained
    val = load_checkpoint(run / CHECKPOINT)["val_indices"].numpy()
    assert len(val) == 3 and validation.skipped == 0
    assert np.array_equal(validation.positions, np.arange(len(val)))

    out = encode_run(
        run, tmp_path / "val.h5", split_map={"query": "val", "database": "train"},
        database="encode", device=device, progress=False,
    )  # fmt: skip
    query = read_codes(out)["query"]
    assert np.array_equal(query.ids, val)
    paths = [str(root / p) for p in query.paths]
    by_image = encode_query_images(paths, run, K, device=device)

    import fghash

    relaxed = fghash.load(run, device=device).encode_relaxed(paths)
    # the same float outputs, bit for bit, whichever path ran the network
    assert np.array_equal(query.features, validation.relaxed)
    assert np.array_equal(relaxed, validation.relaxed)
    # and the same codes: sgn(tanh v), packed
    codes = packed_signs(validation.relaxed)
    assert np.array_equal(query.codes, codes)
    assert np.array_equal(by_image, codes)
