"""A²-Net: attribute-aware hashing network, and the vanilla ADSH backbone.

Wei et al., "A²-Net: Learning Attribute-Aware Hash Codes for Large-Scale Fine-Grained
Image Retrieval", NeurIPS 2021; journal extension with self-consistency, Wei et al.,
"Attribute-Aware Deep Hashing with Self-Consistency for Large-Scale Fine-Grained Image
Retrieval", arXiv:2311.12894. Layer shapes and defaults follow the authors' reference
code (``models/A_2_net.py`` in the public ``aassxun`` repositories); this is a fresh
implementation on torchvision ResNets.

Architecture (``T`` = the ``layer3`` tensor ``[B, C3, h, w]`` of the backbone):

* global branch (Eq. 4): ``x_g = GAP(φ_g(T))`` with ``φ_g`` a copy of ``layer4``;
* attention branch: ``A = ψ(T) ∈ R_{≥0}^{M×h×w}``, ``ψ`` a stride-1 stack of three
  bottleneck blocks, each followed by a 1×1 conv + BN that divides the channels by 4, and
  a final 1×1 conv + BN + ReLU to ``M`` maps (ReLU keeps the maps non-negative);
* local branch (Eq. 2–3): ``T_m = a_m ⊙ T`` and ``x_m = GAP(φ_l(T_m))`` for
  ``m = 1..M``; all ``M`` products go through ONE shared copy ``φ_l`` of ``layer4`` (as in
  the reference, which batches them as ``B·M`` images through one module), a second
  copy, separate from ``φ_g``;
* ``x = [x_1; …; x_M; x_g] ∈ R^{(M+1)·C4}`` (locals first, global last, as the reference).

Hashing (Eq. 6–7, 14): the encoder ``W ∈ R^{k×d}`` (no bias) gives ``v = W x``; the
relaxed code is ``tanh(v)``; the decoder is tied, ``x̂ = Wᵀ tanh(v)`` (the reference
decodes the relaxed code, not ``v``); binary codes are ``u = sgn(tanh(W x))``. The head
runs in float32 even under autocast (:meth:`A2Net.hash_head`), so training on a GPU in
bfloat16 sees the same ``tanh`` and gradients as float32, and its codes match a float32
encode of the same features.

``num_attention`` defaults to ``bits`` (M = k): the reference trainer passes
``att_size = code_length`` so that each bit can attach to one attribute.

``efficient=True`` (never the default) replaces the ``M`` local ``layer4`` passes by
attention pooling: ``F = φ_g(T)`` is computed once, each map is average-pooled down to
``F``'s grid and ``x_m = mean_p a_m(p) F(p)``; the global vector is ``GAP(F)``. That is
one ``layer4`` pass instead of ``M + 1`` and no second ``layer4`` copy, at the price of
sharing the feature map between the global and the local vectors.

``attention=False`` gives the vanilla ADSH network: backbone through ``layer4`` + GAP +
the same hash layer (the baselines DPSH and HashNet use it too).

``self_consistency=True`` (journal) adds two image decoders (the reference's two
``Generator`` modules) that reconstruct the input image ``I``:

* ``Î = G₁(x)`` from the holistic features, and
* ``Î′ = G₂(dret)`` from the features decoded from the codes, ``dret = Wᵀ tanh(W x)``
  (``x̂`` above), so that the image the codes describe must look like the input: the
  self-consistency gradient reaches the hash layer ``W`` through ``dret``, which ``G₁``'s
  gradient does not.

Each decoder is a linear layer to 512 values, a transposed conv to an ``s×s`` grid
(``s = ceil(image_size / 32)``), then five ×2 transposed-conv upsamplings with BN + ReLU
(as the reference ``Generator``; 7×7 → 224×224 at the default size). Unlike the
reference, the last layer is linear (no BN + sigmoid) because it regresses the
normalised input image; outputs are resized to the input's size if it differs. The loss
is in :class:`fghash.training.losses.ImageReconstructionLoss`.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck

from fghash.codes.bits import check_bits
from fghash.errors import FghashError
from fghash.models._registry import register_model
from fghash.models.backbones import build_resnet, resnet_channels, split_resnet

__all__ = [
    "HashOutput",
    "A2Net",
    "ImageDecoder",
    "attended",
    "a2net",
    "a2net_efficient",
    "adsh",
    "dpsh",
    "hashnet",
]


@dataclass
class HashOutput:
    """What :meth:`A2Net.forward` returns (``B`` images, ``k`` bits, ``d`` feature size)."""

    v: Tensor  # [B, k] encoder output v = W x (Eq. 6)
    relaxed: Tensor  # [B, k] relaxed code tanh(v), in (-1, 1)
    x: Tensor  # [B, d] concatenated local and global features
    x_rec: Tensor  # [B, d] tied-decoder reconstruction Wᵀ tanh(v) (Eq. 7)
    image_rec: Tensor | None  # [B, 3, H, W] image reconstructed from x (self-consistency)
    attention: Tensor | None  # [B, M, h, w] non-negative attention maps, else None
    image_rec_code: Tensor | None = None  # [B, 3, H, W] image reconstructed from Wᵀ tanh(v)


def _init_convs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _attention_stack(c3: int, num_maps: int) -> nn.Sequential:
    """ψ: stride-1 bottlenecks on the layer3 tensor, narrowing by 4 between them, to M maps."""
    layers: list[nn.Module] = []
    c = c3
    for i in range(3):
        # A torchvision Bottleneck maps c -> 4·(c/4) = c channels, so no downsample path.
        layers.append(Bottleneck(c, max(c // 4, 1)))
        if i < 2:
            nxt = max(c // 4, 4)
            layers += [nn.Conv2d(c, nxt, 1, bias=False), nn.BatchNorm2d(nxt)]
            c = nxt
    layers += [nn.Conv2d(c, num_maps, 1, bias=False), nn.BatchNorm2d(num_maps), nn.ReLU()]
    seq = nn.Sequential(*layers)
    _init_convs(seq)
    return seq


class ImageDecoder(nn.Module):
    """Self-consistency path: reconstruct a ``3×S×S`` image from a feature vector."""

    def __init__(self, in_dim: int, image_size: int, hidden: int = 512) -> None:
        super().__init__()
        self.start = max(1, math.ceil(image_size / 32))
        self.fc = nn.Linear(in_dim, hidden)
        chans = [256, 128, 64, 32, 16]
        blocks: list[nn.Module] = [
            nn.ConvTranspose2d(hidden, chans[0], self.start, 1, 0, bias=False),
            nn.BatchNorm2d(chans[0]),
            nn.ReLU(),
        ]
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            blocks += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]
        blocks.append(nn.ConvTranspose2d(chans[-1], 3, 4, 2, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        img = self.net(self.fc(x)[:, :, None, None])
        if size is not None and tuple(img.shape[-2:]) != tuple(size):
            img = F.interpolate(img, size=size, mode="bilinear", align_corners=False)
        return img


def attended(a: Tensor, t: Tensor) -> Tensor:
    """The Eq. 2 products ``T_m = a_m ⊙ T`` as one ``[B·M, C3, h, w]`` batch, written once
    in ``t``'s memory format (the largest tensor of the faithful forward).

    In NCHW ``(a.unsqueeze(2) * t.unsqueeze(1))`` is contiguous and its flatten a view.
    In channels-last that product is laid out ``[B, h, w, M, C3]``: the flatten copies it
    to NCHW and ``φ_l``'s channels-last convolution copies it back. Multiplying in
    ``[B, M, h, w, C3]`` order instead (``a`` made contiguous: ``C3`` times smaller) gives
    exactly the channels-last ``[B·M, C3, h, w]`` layout, the flatten a view.
    """
    channels_last = not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
    if not channels_last:
        return (a.unsqueeze(2) * t.unsqueeze(1)).flatten(0, 1)
    prod = a.contiguous().unsqueeze(-1) * t.permute(0, 2, 3, 1).unsqueeze(1)
    return prod.contiguous().permute(0, 1, 4, 2, 3).flatten(0, 1)  # contiguous(): a no-op


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < lo
        or (hi is not None and value > hi)
    ):
        rng = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
        raise FghashError(f"{name} must be an integer {rng}, got {value!r}.")
    return value


class A2Net(nn.Module):
    """A²-Net hashing network (see the module docstring for the maths).

    Args:
        bits: code length ``k``.
        backbone: ``resnet18``, ``resnet34``, ``resnet50`` (paper) or ``resnet101``.
        weights: ``None``, a torchvision weight name (``"IMAGENET1K_V1"``, ``"DEFAULT"``) or
            a path to a local ResNet state-dict file; both ``layer4`` copies start from it.
        num_attention: number of attention maps ``M``; ``None`` means ``bits``.
        attention: ``False`` gives the vanilla ADSH network (global branch only).
        self_consistency: add the two image decoders of the journal version (from ``x`` and
            from ``Wᵀ tanh(W x)``).
        image_size: training image side; sets the decoder's output size.
        efficient: one shared ``layer4`` pass + attention pooling instead of ``M`` passes.
    """

    def __init__(
        self,
        bits: int,
        backbone: str = "resnet50",
        weights: str | os.PathLike[str] | None = None,
        num_attention: int | None = None,
        attention: bool = True,
        self_consistency: bool = False,
        image_size: int = 224,
        efficient: bool = False,
    ) -> None:
        super().__init__()
        bits = check_bits(bits)
        num_attention = bits if num_attention is None else num_attention
        num_attention = _check_int("num_attention", num_attention, 1)
        image_size = _check_int("image_size", image_size, 16)
        c3, c4 = resnet_channels(backbone)
        self.config: dict[str, Any] = {
            "bits": bits,
            "backbone": backbone,
            "weights": None if weights is None else os.fspath(weights),
            "num_attention": num_attention if attention else None,
            "attention": bool(attention),
            "self_consistency": bool(self_consistency),
            "image_size": image_size,
            "efficient": bool(efficient) and bool(attention),
        }
        self.model_name = "a2net" if attention else "adsh"
        self.bits = bits
        self.num_attention = num_attention if attention else 0
        self.use_attention = bool(attention)
        self.efficient = bool(efficient) and self.use_attention

        trunk, layer4 = split_resnet(build_resnet(backbone, weights))
        self.trunk = trunk
        self.layer4_global = layer4
        if self.use_attention:
            self.attention_net = _attention_stack(c3, num_attention)
            if not self.efficient:
                self.layer4_local = copy.deepcopy(layer4)
        self.feature_dim = (self.num_attention + 1) * c4
        self.W = nn.Parameter(torch.empty(bits, self.feature_dim))
        nn.init.kaiming_uniform_(self.W, a=math.sqrt(5))
        self.decoder = ImageDecoder(self.feature_dim, image_size) if self_consistency else None
        self.decoder_code = ImageDecoder(self.feature_dim, image_size) if self_consistency else None

    def features(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """``x`` ``[B, d]`` and the attention maps ``[B, M, h, w]`` (``None`` without attention)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise FghashError(
                f"images must be a [B, 3, H, W] tensor, got shape {tuple(images.shape)}."
            )
        t = self.trunk(images)
        g_map = self.layer4_global(t)
        x_g = g_map.mean(dim=(2, 3))
        if not self.use_attention:
            return x_g, None
        a = self.attention_net(t)
        b, m = a.shape[:2]
        if self.efficient:
            a_small = F.adaptive_avg_pool2d(a, g_map.shape[-2:])
            x_l = torch.einsum("bmhw,bchw->bmc", a_small, g_map) / (
                g_map.shape[-2] * g_map.shape[-1]
            )
        else:
            l_map = self.layer4_local(attended(a, t))  # shared φ_l, Eq. 3
            x_l = l_map.mean(dim=(2, 3)).view(b, m, -1)
        return torch.cat([x_l.flatten(1), x_g], dim=1), a

    def hash_head(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(v, tanh(v), Wᵀ tanh(v), x)`` in float32, whatever autocast is on.

        Under bfloat16 autocast the head would round ``v`` to 8 significant bits and
        ``tanh`` would reach exactly ±1 at ``|v| ≈ 3.8`` instead of ``≈ 9``: the hash,
        quantisation and decorrelation gradients would vanish early, ``U`` (which drives
        the discrete update of ``B``) would be rounded, and the codes would differ from a
        float32 encode. The backbone's features ``x`` are cast up once; the head is tiny.
        """
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            w = self.W.float()
            v = F.linear(x, w)
            relaxed = torch.tanh(v)
            return v, relaxed, relaxed @ w, x  # dret = Wᵀ tanh(v) for each row

    def forward(self, images: Tensor) -> HashOutput:
        x, a = self.features(images)
        v, relaxed, x_rec, x = self.hash_head(x)
        image_rec = image_rec_code = None
        if self.decoder is not None and self.decoder_code is not None:
            size = tuple(images.shape[-2:])
            image_rec = self.decoder(x, size)
            image_rec_code = self.decoder_code(x_rec, size)
        return HashOutput(
            v=v,
            relaxed=relaxed,
            x=x,
            x_rec=x_rec,
            image_rec=image_rec,
            attention=a,
            image_rec_code=image_rec_code,
        )

    def embed(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(tanh(W x), x)`` without the image decoders: what evaluation needs."""
        _, relaxed, _, x = self.hash_head(self.features(images)[0])
        return relaxed, x

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Relaxed codes ``tanh(W x)`` ``[B, k]`` without gradients (the decoder is skipped).

        The module's train/eval mode is left as it is: call ``model.eval()`` first so that
        BatchNorm uses its running statistics.
        """
        return self.embed(images)[0]

    @torch.no_grad()
    def codes(self, images: Tensor) -> Tensor:
        """Binary codes ``sgn(tanh(W x))`` as ±1 floats ``[B, k]`` (Eq. 14; sgn(0) = +1)."""
        r = self.encode(images)
        return torch.where(r >= 0, 1.0, -1.0).to(r.dtype)


_OPTIONS = tuple(inspect.signature(A2Net.__init__).parameters)[1:]


def _build(defaults: dict[str, Any], kwargs: dict[str, Any]) -> A2Net:
    unknown = sorted(set(kwargs) - set(_OPTIONS))
    if unknown:
        raise FghashError(
            f"unknown model option {unknown[0]!r}; the options are: {', '.join(_OPTIONS)}."
        )
    return A2Net(**{**defaults, **kwargs})


@register_model
def a2net(**kwargs: Any) -> A2Net:
    """A²-Net as published: M = bits attention maps, one ``layer4`` pass per map."""
    return _build({"attention": True, "efficient": False}, kwargs)


@register_model
def a2net_efficient(**kwargs: Any) -> A2Net:
    """A²-Net with attention pooling over one shared ``layer4`` pass (cheaper, not the paper)."""
    return _build({"attention": True, "efficient": True}, kwargs)


@register_model
def adsh(**kwargs: Any) -> A2Net:
    """Vanilla ADSH network: ResNet through ``layer4`` + GAP + hash layer ``tanh(W x)``."""
    return _build({"attention": False, "self_consistency": False}, kwargs)


@register_model
def dpsh(**kwargs: Any) -> A2Net:
    """The vanilla network for the DPSH baseline (same as ``adsh``; train with ``DPSHLoss``)."""
    return _build({"attention": False, "self_consistency": False}, kwargs)


@register_model
def hashnet(**kwargs: Any) -> A2Net:
    """The vanilla network for the HashNet baseline (same as ``adsh``; train with ``HashNetLoss``)."""
    return _build({"attention": False, "self_consistency": False}, kwargs)
