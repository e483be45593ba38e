"""``fghash demo``, learning half: synthetic data, a small training run, a codes file.

:func:`run_demo` does, in one folder (``OUT``, default ``./fghash-demo``)::

    OUT/demo.json   the DemoConfig the folder was made with (written first)
    OUT/data/       the embedded synthetic bird set (fghash.data.synthetic), no download
    OUT/run/        a training run (fghash.training.loop): config.json, checkpoints, metrics.jsonl
    OUT/codes.h5    schema-v1 codes file: query = test split (network codes), database =
                    training split (learned codes B), relaxed codes tanh(v) as features

The search half (``OUT/index``, searches, mAP, speed) is :mod:`fghash.demo.chain`.

Re-running is cheap and never silently mixes settings: the same settings reuse the data
and a finished run (only the encoding is redone) and resume an interrupted run; other
settings in a folder that holds a demo raise :class:`FghashError` unless ``force=True``
(which deletes ``run/``, ``codes.h5`` and ``index/`` and regenerates changed data); a
non-empty folder that holds no demo is never touched.

Why the default configuration looks the way it does (random initialisation, a laptop
CPU; the measurements behind it are in CHANGELOG.md):

* ``soft_similarity=True``: with ADSH's ``S̃ ∈ {−1, +1}`` and 16 classes, 15 of 16 pairs
  are dissimilar; a random network gives nearly the same ``u`` for every image, so the
  first discrete update (``Q = k S̃ᵀ U``, dominated by ``−k m u``) collapses all of B to
  one code. The soft targets ``−P/D`` make ``Σ_i S̃_ij ≈ 0``: only differences drive B.
* ``init_codes="class"``, ``hold_codes=8``: ADSH starts B from random bits. From random
  weights the network cannot tell the classes apart at first, and the best class-blind
  output against random B is ``u = 0``: training sat there (the hash loss at its ``u = 0``
  value) for about 10 of 17 outer iterations, and when it left depended on the
  arithmetic (thread count). Each discrete update from ``U ≈ 0`` also gave every class a
  new code drawn from noise, so the network chased moving targets. Starting B with one
  Hadamard code per class and keeping it for the first 8 outer iterations gives the
  network one fixed target per class; the ADSH updates then take over. The paper
  protocols keep ADSH's random start (``init_codes="random"``, ``hold_codes=0``).
* ``gamma=1`` instead of 200: ``γ Ū`` ties each code to its (at first uninformative)
  network output and, with a few hundred database items, holds the network on its
  starting plateau longer.
* ResNet-18, 64-pixel crops, two attention maps: the smallest settings that still learn
  on this set. ``a2net_efficient`` pools the attention maps over one shared ``layer4``
  pass instead of one pass per map (at 64 px ``layer4`` is most of a step); the
  faithful ``a2net`` is one option away.
* ``max_iter=17``: the most outer iterations that fit in about 4 minutes on 2 cores. With
  the class codes the loss leaves its ``u = 0`` value while B is still held, on every seed
  and thread count measured (docs/benchmarks.md, ``bench_demo_seeds``).

With ``--weights DEFAULT`` (ImageNet weights, downloaded by torchvision) the same
configuration starts from useful features.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fghash.errors import FghashError
from fghash.runs.config import TrainConfig, resolve_config

__all__ = ["DemoConfig", "DemoResult", "DEMO_FILE", "run_demo"]

log = logging.getLogger(__name__)

DEMO_FILE = "demo.json"
_OURS = ("demo.json", "data", "run", "codes.h5", "index")


@dataclass(frozen=True)
class DemoConfig:
    """Everything that decides what the demo learns (the device is not part of it)."""

    # --- synthetic data (fghash.data.synthetic.generate_synthetic) ---
    num_classes: int = 16  # bird species; chance mAP is about 1/num_classes
    train_per_class: int = 30  # database images per class
    test_per_class: int = 10  # query images per class
    data_size: int = 64  # side of the generated PNG images
    # --- training (fghash.runs.config.TrainConfig fields) ---
    bits: int = 12  # code length
    method: str = "a2net_efficient"  # A²-Net, attention pooled over one layer4 pass
    backbone: str = "resnet18"  # smallest torchvision ResNet
    weights: str | None = None  # None: random init, no download; "DEFAULT" downloads
    image_size: int = 64  # crop fed to the network (data is resized to 73 first)
    num_attention: int = 2  # attention maps M (the paper uses M = bits)
    max_iter: int = 17  # ADSH outer iterations
    epochs: int = 3  # epochs over the sampled images per outer iteration
    num_samples: int = 480  # images sampled per outer iteration (all of a default database)
    batch_size: int = 16
    lr: float = 0.01  # 0.005 learns less in the same time; 0.03 and up kill the features
    gamma: float = 1.0  # ADSH quantization weight (paper: 200, far too strong here)
    soft_similarity: bool = True  # see the module docstring
    init_codes: str = "class"  # B starts with one code per class (see the module docstring)
    hold_codes: int = 8  # first outer iterations that keep B as initialised (docstring)
    seed: int = 0

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """A tiny configuration that runs in seconds (tests, trying the CLI out)."""
        base = dict(
            # the faithful network: after two steps a2net_efficient's relaxed codes are
            # saturated at ±1, so the float search would rank mostly exact ties
            method="a2net",
            num_classes=4,
            train_per_class=8,
            test_per_class=4,
            data_size=32,
            image_size=32,
            max_iter=1,
            epochs=1,
            num_samples=32,
            lr=5e-3,  # two SGD steps: larger steps leave BatchNorm statistics unusable
        )
        return cls(**{**base, **overrides})

    def replace(self, **overrides: Any) -> DemoConfig:
        """A copy with the non-``None`` ``overrides`` applied (CLI options left unset)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def data_params(self) -> dict[str, int]:
        """Keyword arguments of :func:`fghash.data.synthetic.generate_synthetic`."""
        return dict(
            num_classes=self.num_classes,
            train_per_class=self.train_per_class,
            test_per_class=self.test_per_class,
            image_size=self.data_size,
            seed=self.seed,
        )

    def train_config(self, data_root: str | os.PathLike[str], device: str = "auto") -> TrainConfig:
        """The :class:`TrainConfig` of the demo's training run."""
        data_keys = {"num_classes", "train_per_class", "test_per_class", "data_size"}
        options = {k: v for k, v in self.to_dict().items() if k not in data_keys}
        options["weights"] = self.weights or "none"  # never the protocol's ImageNet download
        return resolve_config(
            "synthetic",
            None,
            data_root=str(Path(data_root).resolve()),
            device=device,
            lr_milestones=(),
            eval_every=0,
            # the demo's own small settings, not the paper protocol's
            nesterov=False,
            train_crop="resize-crop",
            **options,
        )


@dataclass
class DemoResult:
    """What :func:`run_demo` made, and how long each step took."""

    out: Path  # the demo folder
    config: DemoConfig
    data_root: Path  # OUT/data
    run_dir: Path  # OUT/run
    codes_path: Path  # OUT/codes.h5
    trained: str  # "trained", "resumed" or "reused"
    seconds: dict[str, float] = field(default_factory=dict)  # data, training, encoding
    n_train: int = 0  # database items
    n_test: int = 0  # query items


def _check_folder(out: Path, config: DemoConfig, force: bool) -> None:
    """Refuse folders that are not ours, and ours made with other settings (unless forced)."""
    if out.exists() and not out.is_dir():
        raise FghashError(f"--out {out} exists and is not a folder; choose a folder path.")
    marker = out / DEMO_FILE
    if out.is_dir() and not marker.is_file():
        if any(out.iterdir()):
            raise FghashError(
                f"--out {out} is not empty and holds no fghash demo ({DEMO_FILE}); "
                "choose a new or empty folder."
            )
        return
    if not marker.is_file():
        return
    try:
        old = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        old = None
    if old != config.to_dict():
        if not force:
            changed = (
                sorted(k for k, v in config.to_dict().items() if old.get(k) != v)
                if isinstance(old, dict)
                else ["everything"]
            )
            raise FghashError(
                f"{out} holds a demo made with other settings ({', '.join(changed)}); pass "
                "--force to replace it, or choose another --out."
            )


def _clear(out: Path) -> None:
    """Delete the demo's own results (never anything else in ``out``)."""
    for name in ("run", "index", "codes.h5"):
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def _write_marker(out: Path, config: DemoConfig) -> None:
    from fghash.util.atomic import atomic_write_text

    atomic_write_text(
        out / DEMO_FILE, json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"
    )


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _run_state(run_dir: Path) -> str:
    """``"none"``, ``"partial"`` (a checkpoint to resume) or ``"done"``."""
    from fghash.runs.folder import CHECKPOINT

    if (run_dir / "database_codes.npy").is_file() and (run_dir / CHECKPOINT).is_file():
        return "done"
    if (run_dir / CHECKPOINT).is_file():
        return "partial"
    return "none"


def run_demo(
    config: DemoConfig,
    out: str | os.PathLike[str] = "fghash-demo",
    *,
    device: str = "auto",
    force: bool = False,
    progress: bool = True,
    step: Callable[[str], None] | None = None,
) -> DemoResult:
    """Generate the synthetic set, train ``config`` and encode both splits into ``out``.

    ``step`` is called with one line per step (what is being done, then how long it
    took), for a command line to show; library code itself only logs. See the module
    docstring for the folder layout and what re-running does.
    """
    from fghash.data.synthetic import generate_synthetic, load_synthetic
    from fghash.encoding.encode import encode_run
    from fghash.training.loop import train

    say = step or (lambda line: log.info("%s", line))
    out = Path(out)
    _check_folder(out, config, force)
    if force:
        _clear(out)
    out.mkdir(parents=True, exist_ok=True)
    data_root, run_dir, codes_path = out / "data", out / "run", out / "codes.h5"
    cfg = config.train_config(data_root, device=device)  # validates before any work
    _write_marker(out, config)
    res = DemoResult(out, config, data_root, run_dir, codes_path, trained="trained")

    n_img = config.num_classes * (config.train_per_class + config.test_per_class)
    say(
        f"[1/3] synthetic data: {n_img} bird images of {config.num_classes} species "
        f"({config.data_size} px) in {data_root}"
    )
    t0 = time.perf_counter()
    generate_synthetic(data_root, **config.data_params, overwrite=force)
    res.n_train = len(load_synthetic(data_root, "train"))
    res.n_test = len(load_synthetic(data_root, "test"))
    res.seconds["data"] = time.perf_counter() - t0

    state = _run_state(run_dir)
    t0 = time.perf_counter()
    if state == "done":
        res.trained = "reused"
        say(f"[2/3] training: reusing the finished run in {run_dir} (--force trains again)")
    else:
        res.trained = "resumed" if state == "partial" else "trained"
        verb = "resuming" if state == "partial" else "training"
        say(
            f"[2/3] {verb} {cfg.method} ({cfg.backbone}, {cfg.bits} bits, "
            f"{'random init' if cfg.weights is None else cfg.weights + ' weights'}, "
            f"{cfg.image_size} px): {_plural(cfg.max_iter, 'outer iteration')} x "
            f"{_plural(cfg.epochs, 'epoch')} "
            f"over {min(cfg.num_samples, res.n_train)} images, into {run_dir}"
        )
        train(cfg, run_dir, resume=state == "partial", progress=progress)
    res.seconds["training"] = time.perf_counter() - t0

    say(
        f"[3/3] encoding: query = {res.n_test} test images, database = learned codes -> {codes_path}"
    )
    t0 = time.perf_counter()
    encode_run(run_dir, codes_path, device=device, progress=progress, force=True)
    res.seconds["encoding"] = time.perf_counter() - t0
    return res
