"""Hashing networks by name: ``create_model("a2net", bits=12, backbone="resnet50")``.

Registered: ``a2net`` (faithful A²-Net), ``a2net_efficient`` (attention pooling over one
``layer4`` pass), ``adsh``, ``dpsh`` and ``hashnet`` (the vanilla ResNet + hash layer).
"""

from fghash.models import a2net as _a2net  # noqa: F401  (registers the variants)
from fghash.models._registry import create_model, is_model, list_models, register_model
from fghash.models.a2net import A2Net, HashOutput, ImageDecoder
from fghash.models.backbones import RESNETS, build_resnet, resnet_channels

__all__ = [
    "A2Net",
    "HashOutput",
    "ImageDecoder",
    "RESNETS",
    "build_resnet",
    "create_model",
    "is_model",
    "list_models",
    "register_model",
    "resnet_channels",
]
