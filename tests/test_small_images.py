"""Small images: the paper's RandomResizedCrop at 64 px or fewer logs one warning at
training start (it keeps as little as 8 % of an image), never at 224 px or with the
resize-crop."""

from __future__ import annotations

import logging

import pytest

from fghash.data import build_transform, generate_synthetic
from fghash.runs.config import resolve_config
from fghash.training.sampling import TrainData

LOGGER = "fghash.data.transforms"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return generate_synthetic(
        tmp_path_factory.mktemp("small") / "birds",
        num_classes=2,
        train_per_class=2,
        test_per_class=1,
        image_size=32,
    )


def _cfg(root, **over):
    opts = dict(data_root=str(root), backbone="resnet18", weights="none", device="cpu")
    return resolve_config("synthetic", None, **{**opts, **over})


def test_training_start_warns_once_at_32_px(root, caplog) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    TrainData.load(_cfg(root, image_size=32, train_crop="random-resized"))
    lines = _warnings(caplog)
    assert len(lines) == 1
    # 8 % of the area of a 32-px square is a 9-px square (32 · √0.08 = 9.05)
    assert "9x9 px" in lines[0] and "--train-crop resize-crop" in lines[0]


@pytest.mark.parametrize(
    "size, crop", [(224, "random-resized"), (65, "random-resized"), (32, "resize-crop")]
)
def test_no_warning_for_large_images_or_the_resize_crop(root, caplog, size, crop) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    TrainData.load(_cfg(root, image_size=size, train_crop=crop))
    assert _warnings(caplog) == []


def test_evaluation_transform_never_warns(caplog) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    build_transform(False, 32, crop="random-resized")
    assert _warnings(caplog) == []
