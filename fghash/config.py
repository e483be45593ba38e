"""The training configuration: one typed dataclass, ablation presets, JSON round trip.

How a run's configuration is resolved (later wins)::

    TrainConfig defaults  <  DATASET_DEFAULTS[dataset]  <  PRESETS[preset or method]  <  explicit options

Explicit options that are ``None`` are dropped first (as timm's factory does), so a CLI
default never overrides a preset. The resolved config is written as ``config.json`` in the
run folder, beside the checkpoints, and copied into every codes file made from the run.

Defaults follow the public fine-grained hashing reference scripts that A²-Net's protocol
comes from (ADSH training loop; SEMICON/A²-Net command lines for CUB-200-2011): ResNet-50,
224×224 crops of 256-pixel resizes, batch 16, SGD with learning rate 2.5e-4, momentum
0.91, weight decay 1e-4, 40 outer iterations of 30 epochs over m = 2000 sampled images
(4000 and learning rate 5e-4 for NABirds and VegFru), ADSH quantization weight γ = 200.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fghash.errors import FghashError

__all__ = [
    "TrainConfig",
    "METHODS",
    "ASYMMETRIC_METHODS",
    "PRESETS",
    "DATASET_DEFAULTS",
    "resolve_config",
    "parse_bits",
    "save_config",
    "load_config",
]

METHODS = ("a2net", "a2net_efficient", "adsh", "dpsh", "hashnet")
# methods trained asymmetrically (ADSH protocol, learned database codes)
ASYMMETRIC_METHODS = ("a2net", "a2net_efficient", "adsh")


@dataclass
class TrainConfig:
    """Everything that decides what ``fghash train`` does. One code length per run."""

    # --- data ---
    dataset: str = "synthetic"  # data set name, as fghash.data.list_datasets() spells it
    data_root: str = ""  # folder holding the data set
    val_fraction: float = 0.0  # share of the TRAIN split held out as "val" (never the test set)
    # --- what is learned ---
    bits: int = 12  # code length k of this run
    method: str = "a2net"  # a model of fghash.models: a2net, a2net_efficient, adsh, dpsh, hashnet
    preset: str | None = None  # name of the ablation preset applied, for the record
    attention: bool = True  # A²-Net attention branch (off: plain pooled features, ADSH)
    reconstruction: bool = True  # A²-Net feature reconstruction loss
    decorrelation: bool = True  # A²-Net bit decorrelation loss
    self_consistency: bool = False  # journal extension: self-consistency loss
    quantization: bool = True  # ADSH term γ‖V_Ω − U‖² tying codes of Ω to the database
    aux_start_iter: int = 0  # outer iteration from which reconstruction, decorrelation and
    # self-consistency are on (the reference code starts them at 35 of 50); 0 = from the start
    soft_similarity: bool = False  # reference's soft targets: dissimilar pairs → −P/D, not −1
    # --- network ---
    backbone: str = "resnet50"  # torchvision backbone name
    weights: str | None = None  # torchvision weights name (e.g. "DEFAULT"); None = random init
    num_attention: int | None = None  # number of attention maps; None = the model's default
    image_size: int = 224  # side of the (random / centre) crop fed to the network
    resize: int | None = None  # shorter side before cropping; None = image_size·256/224 (256)
    # --- ADSH optimisation schedule ---
    max_iter: int = 40  # outer iterations: sample Ω, train, update database codes B
    epochs: int = 30  # epochs over Ω per outer iteration
    num_samples: int = 2000  # m = |Ω|, images sampled from the database per outer iteration
    batch_size: int = 16  # images per SGD step
    lr: float = 2.5e-4  # SGD learning rate
    momentum: float = 0.91  # SGD momentum (reference scripts use 0.91)
    weight_decay: float = 1e-4  # SGD weight decay
    lr_milestones: tuple[int, ...] = (25, 35)  # outer iterations after which lr *= lr_gamma
    lr_gamma: float = 0.1  # step decay factor
    # --- loss weights (None = the loss's own default) ---
    gamma: float = 200.0  # ADSH quantization weight γ
    lam: float = 1.0  # A²-Net weight λ of ‖Wx − tanh(Wx)‖² inside the reconstruction term
    alpha: float | None = None  # A²-Net decorrelation weight α; None = 1/(n·k) (reference)
    beta: float | None = None  # scale β of the asymmetric and quantization terms; None = 12/k
    image_weight: float = 0.01  # journal self-consistency (image reconstruction) weight
    # --- running ---
    seed: int = 0  # seeds Python, NumPy, torch, the initial codes B and the Ω samples
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    amp: bool = True  # mixed precision (autocast + GradScaler); only ever used on CUDA
    num_workers: int = 0  # DataLoader worker processes
    eval_every: int = 1  # outer iterations between val mAP evaluations (0 = never)
    skip_corrupt: bool = True  # skip unreadable images with a warning instead of stopping

    def __post_init__(self) -> None:
        self.lr_milestones = tuple(int(m) for m in self.lr_milestones)

    def validate(self) -> TrainConfig:
        """Check values a user can get wrong; raise :class:`FghashError` naming the option."""
        if self.method not in METHODS:
            raise FghashError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}.")
        _positive("bits", self.bits, hi=1024)
        for name in ("max_iter", "epochs", "num_samples", "batch_size", "image_size"):
            _positive(name, getattr(self, name))
        if self.resize is not None and self.image_size > self.resize:
            raise FghashError(
                f"--image-size ({self.image_size}) must not exceed the resize ({self.resize})."
            )
        if not 0.0 <= self.val_fraction < 1.0:
            raise FghashError(f"--val-fraction must be in [0, 1), got {self.val_fraction}.")
        if not self.lr > 0:
            raise FghashError(f"--lr must be positive, got {self.lr}.")
        if self.device not in ("auto", "cpu", "cuda"):
            raise FghashError(f"--device must be auto, cpu or cuda, got {self.device!r}.")
        if self.eval_every < 0 or self.num_workers < 0 or self.aux_start_iter < 0:
            raise FghashError(
                "--eval-every, --num-workers and --aux-start-iter must not be negative."
            )
        if self.num_attention is not None and self.num_attention < 1:
            raise FghashError(f"--num-attention must be at least 1, got {self.num_attention}.")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lr_milestones"] = list(self.lr_milestones)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise FghashError(f"unknown training option(s): {', '.join(unknown)}.")
        return cls(**dict(d))


def _positive(name: str, value: int, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FghashError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}.")
    if hi is not None and value > hi:
        raise FghashError(f"--{name.replace('_', '-')} must be at most {hi}, got {value}.")


# Table 2 of A²-Net (NeurIPS 2021): start from ADSH and add one part at a time; the last
# row is the journal extension. Each preset sets the method and every ablation flag.
_FLAGS = ("attention", "reconstruction", "decorrelation", "self_consistency")
_ROWS = ("adsh", "+attention", "+reconstruction", "+decorrelation", "+self-consistency")
# Row i switches on the first i flags; every row past the first is the A²-Net network.
PRESETS: dict[str, dict[str, Any]] = {
    row: dict(method="adsh" if i == 0 else "a2net", **{f: j < i for j, f in enumerate(_FLAGS)})
    for i, row in enumerate(_ROWS)
}
PRESETS["a2net"] = dict(PRESETS["+decorrelation"])

# Larger data sets: the reference scripts sample twice as many images per outer
# iteration and train a little longer with a larger learning rate.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "nabirds": dict(num_samples=4000, lr=5e-4, max_iter=50, lr_milestones=(45,)),
    "vegfru": dict(num_samples=4000, lr=5e-4, max_iter=50, lr_milestones=(45,)),
}


def resolve_config(
    dataset: str | None = None, preset: str | None = None, **options: Any
) -> TrainConfig:
    """Build a :class:`TrainConfig`: defaults < data-set defaults < preset < ``options``.

    ``options`` whose value is ``None`` are dropped, so unset CLI options keep the
    preset's (or default) value.
    """
    values: dict[str, Any] = {}
    if dataset is not None:
        values["dataset"] = dataset
    name = values.get("dataset", TrainConfig.dataset)
    values.update(DATASET_DEFAULTS.get(str(name).lower(), {}))
    if preset is None and options.get("method") in PRESETS:
        # a method named like a preset means that preset: --method adsh is vanilla ADSH
        values.update(PRESETS[options["method"]])
    if preset is not None:
        if preset not in PRESETS:
            raise FghashError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}.")
        values.update(PRESETS[preset])
        values["preset"] = preset
    given = {k: v for k, v in options.items() if v is not None}
    values.update(given)
    cfg = TrainConfig.from_dict(values)
    # Parts a method's network or loss does not have: off unless asked for, an error if asked.
    lacking = _LACKING.get(cfg.method, ())
    asked = [f for f in lacking if given.get(f)]
    if asked:
        flags = ", ".join("--" + f.replace("_", "-") for f in asked)
        raise FghashError(f"{flags} cannot be used with --method {cfg.method}; use --method a2net.")
    for flag in lacking:
        setattr(cfg, flag, False)
    return cfg.validate()


_LACKING: dict[str, tuple[str, ...]] = {
    "adsh": ("attention", "self_consistency"),
    "dpsh": _FLAGS + ("quantization",),
    "hashnet": _FLAGS + ("quantization",),
}


def parse_bits(text: str | int | list[int] | tuple[int, ...]) -> list[int]:
    """Parse ``"12,24,32,48"`` (or an int / list) into distinct code lengths, in order."""
    if isinstance(text, int):
        items = [text]
    elif isinstance(text, (list, tuple)):
        items = list(text)
    else:
        try:
            items = [int(t) for t in str(text).replace(" ", "").split(",") if t]
        except ValueError:
            raise FghashError(
                f"--bits must be comma-separated integers such as 12,24,32,48, got {text!r}."
            ) from None
    if not items:
        raise FghashError("--bits needs at least one code length, e.g. --bits 12.")
    out: list[int] = []
    for b in items:
        _positive("bits", b, hi=1024)
        if b not in out:
            out.append(int(b))
    return out


def save_config(cfg: TrainConfig, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config as pretty JSON, atomically."""
    from fghash.atomic import atomic_write_text

    return atomic_write_text(path, json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")


def load_config(path: str | os.PathLike[str]) -> TrainConfig:
    """Read a ``config.json`` written by :func:`save_config`."""
    path = Path(path)
    if not path.is_file():
        raise FghashError(f"{path}: no such file; is this a run folder made by fghash train?")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise FghashError(f"{path} is not valid JSON; the run folder is damaged.") from None
    return TrainConfig.from_dict(d)
