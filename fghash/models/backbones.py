"""torchvision ResNet backbones by name, split where A²-Net needs them (after ``layer3``).

``weights`` selects the initial parameters:

* ``None`` — random initialisation (what tests use; never downloads);
* a torchvision weight name such as ``"IMAGENET1K_V1"``, ``"IMAGENET1K_V2"`` or
  ``"DEFAULT"`` — torchvision downloads it into ``$TORCH_HOME/hub/checkpoints`` (by
  default ``~/.cache/torch/hub/checkpoints``) on first use; without a network and without
  that file, one sentence says which file to put there, or to pass a local file or none;
* a path to a local file holding a ResNet ``state_dict`` (``torch.save(model.state_dict())``;
  a checkpoint dict with a ``"state_dict"`` or ``"model"`` entry and DataParallel's
  ``"module."`` prefixes are accepted too). The classifier ``fc.*`` may be absent.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torchvision
from torch import nn

from fghash.errors import FghashError

__all__ = ["RESNETS", "build_resnet", "resnet_channels", "split_resnet", "load_state_dict_file"]

log = logging.getLogger(__name__)

# name -> (torchvision constructor name, channels after layer3, channels after layer4)
RESNETS: dict[str, tuple[str, int, int]] = {
    "resnet18": ("resnet18", 256, 512),
    "resnet34": ("resnet34", 256, 512),
    "resnet50": ("resnet50", 1024, 2048),
    "resnet101": ("resnet101", 1024, 2048),
}


def _check_name(name: str) -> str:
    if name not in RESNETS:
        raise FghashError(f"unknown backbone {name!r}; choose one of: {', '.join(RESNETS)}.")
    return name


def resnet_channels(name: str) -> tuple[int, int]:
    """Channels of the ``layer3`` and ``layer4`` outputs of backbone ``name``."""
    _, c3, c4 = RESNETS[_check_name(name)]
    return c3, c4


def _looks_like_path(weights: str) -> bool:
    return (
        os.sep in weights
        or "/" in weights
        or weights.endswith((".pt", ".pth", ".bin", ".ckpt"))
        or Path(weights).exists()
    )


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict saved with ``torch.save``; unwrap common checkpoint layouts."""
    p = Path(path)
    if not p.is_file():
        raise FghashError(
            f"weights file {str(p)!r} does not exist; give a state-dict file, a torchvision weight name such as IMAGENET1K_V1, or no weights."
        )
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or foreign files
        raise FghashError(
            f"weights file {str(p)!r} could not be read as a torch state dict ({e.__class__.__name__})."
        ) from e
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FghashError(f"weights file {str(p)!r} does not hold a state dict of tensors.")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _load_local(model: nn.Module, path: str, name: str) -> None:
    state = load_state_dict_file(path)
    own = model.state_dict()
    bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise FghashError(
            f"weights file {path!r} does not fit {name}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, expected {tuple(own[bad[0]].shape)}."
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [
        k for k in missing if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    ]
    unexpected = [k for k in unexpected if not k.startswith("fc.")]
    if missing or unexpected:
        what = (
            f"{len(missing)} parameters are missing, e.g. {missing[0]}"
            if missing
            else f"it has {len(unexpected)} keys {name} lacks, e.g. {unexpected[0]}"
        )
        raise FghashError(f"weights file {path!r} does not fit {name}: {what}.")
    log.info("loaded %s weights from %s", name, path)


def build_resnet(name: str, weights: str | os.PathLike[str] | None = None) -> nn.Module:
    """A torchvision ResNet ``name`` initialised from ``weights`` (see the module docstring)."""
    ctor, _, _ = RESNETS[_check_name(name)]
    if weights is None:
        return getattr(torchvision.models, ctor)(weights=None)
    weights = os.fspath(weights)
    if _looks_like_path(weights):
        model = getattr(torchvision.models, ctor)(weights=None)
        _load_local(model, weights, name)
        return model
    enum = torchvision.models.get_model_weights(ctor)
    names = ["DEFAULT", *enum.__members__]
    if weights not in names:
        raise FghashError(
            f"unknown weights {weights!r} for {name}; use one of {', '.join(names)}, or a path to a state-dict file."
        )
    member = enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    return _torchvision_pretrained(ctor, member, name)


def _torchvision_pretrained(ctor: str, member: object, name: str) -> nn.Module:
    """torchvision's constructor with ``member`` weights, from its cache or downloaded."""
    from urllib.parse import urlparse

    url = str(getattr(member, "url", ""))
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    try:
        return getattr(torchvision.models, ctor)(weights=member)
    except Exception as e:  # no network (URLError), a broken download, a damaged cache file
        if cached.is_file():
            raise FghashError(
                f"the cached {name} weights {cached} could not be read ({e.__class__.__name__}); "
                "delete the file so that it is downloaded again, or pass --weights none."
            ) from None
        raise FghashError(
            f"the {name} ImageNet weights ({member}) are not in torchvision's cache and could not "
            f"be downloaded ({e.__class__.__name__}); download {url} to {cached}, pass a local "
            "state-dict file with --weights PATH, or train from random weights with --weights none."
        ) from None


def split_resnet(model: nn.Module) -> tuple[nn.Sequential, nn.Sequential]:
    """Split a torchvision ResNet into (stem + ``layer1..layer3``, ``layer4``); ``fc`` is dropped."""
    trunk = nn.Sequential(
        model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2, model.layer3
    )
    return trunk, model.layer4
