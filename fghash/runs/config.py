"""The training configuration: one typed dataclass, protocols, ablation presets, JSON round trip.

How a run's configuration is resolved (later wins)::

    TrainConfig defaults  <  PROTOCOLS[protocol]  <  DATASET_DEFAULTS[protocol][dataset]
                          <  PRESETS[preset or method]  <  explicit options

Explicit options that are ``None`` are dropped first (as timm's factory does), so a CLI
default never overrides a preset. The resolved config, with the protocol's name and every
value it set, is written as ``config.json`` in the run folder, beside the checkpoints, and
copied into every codes file made from the run.

Two protocols (``--protocol``):

* ``paper`` (the default, and the dataclass defaults): the values the A²-Net paper states
  (T_max = 60 outer iterations with lr/10 at 50 for data sets under 20,000 training
  images, 70 and 60 otherwise; 20 epochs; λ = 1, α = 1/(n·k), β = 12/k; M = bits
  attention maps; batch 16; 2,000 sampled images, 4,000 for NABirds and VegFru; weight
  decay 1e-4; ImageNet ResNet-50), and the authors' reference code where the paper is
  silent (lr 2.5e-4, 5e-4 for NABirds and VegFru; momentum 0.91 with Nesterov; soft
  similarity targets; γ = 200; ``RandomResizedCrop(224)`` + flip for training).
* ``reference``: the authors' A²-Net training script throughout (``aassxun/DSH_Analysis``:
  ``A_2_Net.py``, ``models/A_2_net_loss.py``, ``set_flag.py``, ``run.py``; each value
  in :data:`PROTOCOLS` cites its file and line): λ = 0 (its reconstruction keeps only
  ‖X − WᵀV′‖²), 40 outer iterations of 30 epochs with lr/10 after 35 on every
  fine-grained set, lr 1e-4, momentum 0.9 without Nesterov, and two stages: hash +
  quantization alone until ``max_iter // 2`` (20 of 40), then the reconstruction and
  decorrelation terms too (``aux_start_iter``, resolved from the final ``max_iter``).

The README has the table of every value with its source.

The paper's λ‖WX − V′‖² term: with ``V′ = tanh(WX)`` read literally it is
``mean((v − tanh v)²)``, which pulls |v| towards 0 (where tanh v ≈ v) and fights the
quantization term that pushes tanh v to ±1; the reference code drops it. ``paper`` keeps
it, as the paper states (λ = 1, averaged over the n·k entries like the first term's n·d);
``reference`` and ``--lam 0`` drop it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fghash.codes.bits import check_bits, parse_bits  # parse_bits: re-exported for the CLI
from fghash.errors import FghashError

__all__ = [
    "TrainConfig",
    "METHODS",
    "ASYMMETRIC_METHODS",
    "PROTOCOLS",
    "TRAIN_CROPS",
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
# random-resized: RandomResizedCrop(image_size) + flip (reference code);
# resize-crop: Resize(resize) + RandomCrop(image_size) + flip
TRAIN_CROPS = ("random-resized", "resize-crop")
AMP_DTYPES = ("bfloat16", "float16")
INIT_CODES = ("random", "class")  # TrainConfig.init_codes (fghash.training.adsh)


@dataclass
class TrainConfig:
    """Everything that decides what ``fghash train`` does. One code length per run.

    The defaults are the ``paper`` protocol for a data set under 20,000 training images.
    """

    # --- data ---
    dataset: str = "synthetic"  # data set name, as fghash.data.list_datasets() spells it
    data_root: str = ""  # folder holding the data set
    val_fraction: float = 0.0  # share of the TRAIN split held out as "val" (never the test set)
    protocol: str = "paper"  # "paper" or "reference": which set of defaults was resolved
    # --- what is learned ---
    bits: int = 12  # code length k of this run
    method: str = "a2net"  # a model of fghash.models: a2net, a2net_efficient, adsh, dpsh, hashnet
    preset: str | None = None  # name of the ablation preset applied, for the record
    attention: bool = True  # A²-Net attention branch (off: plain pooled features, ADSH)
    reconstruction: bool = True  # A²-Net feature reconstruction loss
    decorrelation: bool = True  # A²-Net bit decorrelation loss
    self_consistency: bool = False  # journal extension: self-consistency loss
    quantization: bool = True  # ADSH term γ‖V_Ω − U‖² tying codes of Ω to the database
    aux_start_iter: int = 0  # outer iteration where the reference's fine-tune stage starts:
    # the reconstruction term switches on and the image weight goes image_weight ->
    # image_weight_finetune; 0 = every term (and the fine-tune image weight) throughout
    soft_similarity: bool = True  # reference's soft targets: dissimilar pairs → −P/D, not −1
    init_codes: str = "random"  # start of B: "random" (ADSH) or "class" (one code per class,
    # fghash.training.adsh.init_database_codes; the demo's choice, leaves the u = 0 plateau)
    hold_codes: int = 0  # first outer iterations that keep B as initialised (no discrete
    # update): the network learns towards fixed codes before B follows it (0 = ADSH)
    # --- network ---
    backbone: str = "resnet50"  # torchvision backbone name
    weights: str | None = "IMAGENET1K_V1"  # torchvision weights name or a state-dict file;
    # None = random initialisation (the CLI spells it --weights none)
    num_attention: int | None = None  # number of attention maps; None = bits (M = k)
    image_size: int = 224  # side of the (random / centre) crop fed to the network
    resize: int | None = None  # shorter side before cropping; None = image_size·256/224 (256)
    train_crop: str = "random-resized"  # training augmentation, one of TRAIN_CROPS
    # --- ADSH optimisation schedule ---
    max_iter: int = 60  # outer iterations T_max: sample Ω, train, update database codes B
    epochs: int = 20  # epochs over Ω per outer iteration
    num_samples: int = 2000  # m = |Ω|, images sampled from the database per outer iteration
    batch_size: int = 16  # images per SGD step (split across processes under torchrun)
    lr: float = 2.5e-4  # SGD learning rate
    momentum: float = 0.91  # SGD momentum (reference scripts use 0.91)
    nesterov: bool = True  # Nesterov momentum (reference code)
    weight_decay: float = 1e-4  # SGD weight decay
    lr_milestones: tuple[int, ...] = (50,)  # outer iterations after which lr *= lr_gamma
    lr_gamma: float = 0.1  # step decay factor
    # --- loss weights (None = the loss's own default) ---
    gamma: float = 200.0  # ADSH quantization weight γ
    lam: float = 1.0  # A²-Net weight λ of ‖Wx − tanh(Wx)‖² inside the reconstruction term
    alpha: float | None = None  # A²-Net decorrelation weight α; None = 1/(n·k) (reference)
    beta: float | None = None  # scale β of the asymmetric and quantization terms; None = 12/k
    image_weight: float = 0.01  # journal self-consistency (image) weight before fine-tuning
    image_weight_finetune: float = 0.1  # ... and from aux_start_iter on
    # --- running ---
    seed: int = 0  # seeds Python, NumPy, torch, the initial codes B and the Ω samples
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    amp: bool = True  # mixed precision (autocast); only ever used on CUDA
    amp_dtype: str = "bfloat16"  # autocast dtype; float16 adds a GradScaler (one sync a step)
    num_workers: int | None = None  # DataLoader workers; None = 0 on CPU, chosen on CUDA
    nan_check_every: int = 50  # SGD steps between NaN checks (and at every epoch's end)
    keep_checkpoints: int = 2  # per-iteration checkpoints kept (older ones are pruned)
    eval_every: int = 1  # outer iterations between val mAP evaluations (0 = never)
    skip_corrupt: bool = True  # skip unreadable images with a warning instead of stopping

    def __post_init__(self) -> None:
        self.lr_milestones = tuple(int(m) for m in self.lr_milestones)

    def validate(self) -> TrainConfig:
        """Check values a user can get wrong; raise :class:`FghashError` naming the option."""
        if self.method not in METHODS:
            raise FghashError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}.")
        for name, value, choices in (
            ("protocol", self.protocol, PROTOCOLS),
            ("train-crop", self.train_crop, TRAIN_CROPS),
            ("amp-dtype", self.amp_dtype, AMP_DTYPES),
            ("init-codes", self.init_codes, INIT_CODES),
        ):
            if value not in choices:
                raise FghashError(f"--{name} must be one of {', '.join(choices)}, got {value!r}.")
        check_bits(self.bits, "--bits")
        for name in (
            "max_iter",
            "epochs",
            "num_samples",
            "batch_size",
            "image_size",
            "nan_check_every",
            "keep_checkpoints",
        ):
            _positive(name, getattr(self, name))
        if self.resize is not None and self.image_size > self.resize:
            raise FghashError(
                f"--image-size ({self.image_size}) must not exceed the resize ({self.resize})."
            )
        if self.hold_codes < 0:
            raise FghashError(f"--hold-codes must be 0 or more, got {self.hold_codes}.")
        if not 0.0 <= self.val_fraction < 1.0:
            raise FghashError(f"--val-fraction must be in [0, 1), got {self.val_fraction}.")
        if not self.lr > 0:
            raise FghashError(f"--lr must be positive, got {self.lr}.")
        if self.nesterov and not self.momentum > 0:
            raise FghashError(
                f"--nesterov needs a positive --momentum, got {self.momentum}; pass --no-nesterov."
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise FghashError(f"--device must be auto, cpu or cuda, got {self.device!r}.")
        if self.eval_every < 0 or (self.num_workers or 0) < 0 or self.aux_start_iter < 0:
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


def _positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FghashError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}.")


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

# The values each protocol changes from the TrainConfig defaults (= the paper protocol).
# reference: aassxun/DSH_Analysis at 44271bc; "set_flag.py:203" is file:line there. The
# fine-grained sets (cub200 l.194, food101 l.209, vegfru l.223, standforddog l.237,
# aircraft l.250, nabirds l.264) all share max_epoch, max_iter and lr_step.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "paper": {},
    "reference": dict(
        lam=0.0,  # models/A_2_net_loss.py:34: the reconstruction is MSE(dret, all_f) alone
        epochs=30,  # set_flag.py:202 (args.max_epoch = 30)
        max_iter=40,  # set_flag.py:203 (args.max_iter = 40)
        # set_flag.py:205 (lr_step '35', split at run.py:225) into MultiStepLR's default
        # gamma 0.1 (A_2_Net.py:32), stepped once per outer iteration (A_2_Net.py:93)
        lr_milestones=(35,),
        lr=1e-4,  # set_flag.py:139 (the a2net flag)
        momentum=0.9,  # set_flag.py:141
        nesterov=False,  # run.py:183 (--nesterov is store_true; set_flag.py never sets it)
        # aux_start_iter: max_iter // 2, see _FINE_TUNE_AT_HALF below
    ),
}
# Protocols whose fine-tune stage starts at max_iter // 2 unless --aux-start-iter is given:
# A_2_Net.py:48-49 sets criterion.finetune at it == max_iter // 2, and from then on
# models/A_2_net_loss.py:33-35 adds the reconstruction and decorrelation terms to hash +
# quantization (l.42 before). Its `iter >= 35` branch (l.39-40) is reached only while
# finetune is off, i.e. never with 40 iterations.
_FINE_TUNE_AT_HALF = ("reference",)

# Per data set: the paper's schedule rule (under / over 20,000 training images) and the
# reference's per-set values (set_flag.py). Data sets not named here (Stanford Dogs and
# Cars, list, imagefolder, synthetic) take the protocol's values above, i.e. the paper's
# under-20,000 schedule; pass --max-iter and --lr-milestones for a large custom set.
_LARGE = dict(max_iter=70, lr_milestones=(60,))  # paper: 20,000 training images or more
_MORE_SAMPLES = dict(num_samples=4000, lr=5e-4)  # NABirds, VegFru (paper: 4,000; code: lr)
_REF_MORE_SAMPLES = dict(num_samples=4000)  # set_flag.py:227 (vegfru), :268 (nabirds)
DATASET_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {
        "food101": dict(_LARGE),
        "nabirds": dict(_LARGE, **_MORE_SAMPLES),
        "vegfru": dict(_LARGE, **_MORE_SAMPLES),
    },
    "reference": {
        "nabirds": dict(_REF_MORE_SAMPLES),
        "vegfru": dict(_REF_MORE_SAMPLES),
    },
}


def resolve_config(
    dataset: str | None = None,
    preset: str | None = None,
    protocol: str | None = None,
    **options: Any,
) -> TrainConfig:
    """Build a :class:`TrainConfig`: defaults < protocol < data-set defaults < preset <
    ``options``.

    ``options`` whose value is ``None`` are dropped, so unset CLI options keep the
    preset's (or default) value. ``weights="none"`` means random initialisation (stored
    as ``None``). ``reference`` starts its fine-tune stage at ``max_iter // 2`` of the
    resolved ``max_iter`` (so ``--max-iter 60`` moves it to 30, as the reference script
    would) unless ``aux_start_iter`` is given. The ``+self-consistency`` preset (the
    journal's two-stage training) starts the fine-tune stage at the first lr milestone
    when the protocol has none (``aux_start_iter = 0``) and ``aux_start_iter`` is not
    given.
    """
    protocol = protocol or "paper"
    if protocol not in PROTOCOLS:
        raise FghashError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}.")
    values: dict[str, Any] = {"protocol": protocol, **PROTOCOLS[protocol]}
    if dataset is not None:
        values["dataset"] = dataset
    name = values.get("dataset", TrainConfig.dataset)
    values.update(DATASET_DEFAULTS[protocol].get(str(name).lower(), {}))
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
    if isinstance(values.get("weights"), str) and values["weights"].lower() == "none":
        values["weights"] = None
    cfg = TrainConfig.from_dict(values)
    if protocol in _FINE_TUNE_AT_HALF and "aux_start_iter" not in given:
        cfg.aux_start_iter = cfg.max_iter // 2
    if cfg.self_consistency and "aux_start_iter" not in given and not cfg.aux_start_iter:
        cfg.aux_start_iter = min(cfg.lr_milestones, default=0)
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


def save_config(cfg: TrainConfig, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config as pretty JSON, atomically."""
    from fghash.util.atomic import atomic_write_text

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
