"""One training step: the loss, the optimizer, mixed precision, and the step itself.

Nothing in a step waits for the device: the losses skip their value checks and report
tensors (:func:`build_loss`), and the caller checks the summed loss for NaN now and then.
On CUDA the step runs under autocast (bfloat16 without a GradScaler; float16 adds one) on
channels-last tensors.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from contextlib import nullcontext
from typing import Any

import torch

from fghash.runs.config import ASYMMETRIC_METHODS, TrainConfig
from fghash.training.distributed import Dist

__all__ = [
    "EpochSums",
    "Optimisation",
    "build_loss",
    "float_output",
    "is_asymmetric",
    "make_sgd",
    "set_loss_stage",
]

log = logging.getLogger(__name__)


def is_asymmetric(cfg: TrainConfig) -> bool:
    """Whether the method learns database codes B (ADSH's alternation) rather than a
    memory bank of network outputs (DPSH, HashNet)."""
    return cfg.method in ASYMMETRIC_METHODS


def build_loss(cfg: TrainConfig) -> torch.nn.Module:
    """The loss a config describes, set up for the training loop (no per-step host syncs)."""
    from fghash.training import losses

    if is_asymmetric(cfg):
        loss: torch.nn.Module = losses.A2NetLoss(
            cfg.bits,
            reconstruction=cfg.reconstruction,
            decorrelation=cfg.decorrelation,
            asymmetric=True,
            quantization=cfg.quantization,
            self_consistency=cfg.self_consistency,
            lam=cfg.lam,
            alpha=cfg.alpha,
            beta=cfg.beta,
            gamma=cfg.gamma,
            image_weight=cfg.image_weight,
            soft_similarity=cfg.soft_similarity,
        )
    elif cfg.method == "dpsh":
        loss = losses.DPSHLoss(cfg.bits)
    else:
        loss = losses.HashNetLoss(cfg.bits)
    for m in loss.modules():  # the loop checks for NaN itself, without a sync per tensor
        if isinstance(m, losses.HashLoss):
            m.check_values, m.tensor_parts = False, True
    return loss


def make_sgd(params: Any, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD with ``cfg``'s learning rate, momentum, Nesterov and weight decay, fused when
    this torch can (one kernel per parameter instead of three or four passes over it;
    torch < 2.4 has no fused SGD on the CPU and gets the plain one, same arithmetic)."""
    params = list(params)
    options = dict(
        lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )
    try:
        return torch.optim.SGD(params, fused=True, **options)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.SGD(params, **options)


def set_loss_stage(loss_fn: torch.nn.Module, cfg: TrainConfig, it: int) -> None:
    """The reference's two stages: from ``aux_start_iter`` on, the reconstruction and
    decorrelation terms are on and the image weight is ``image_weight_finetune`` (before:
    hash + quantization only, and ``image_weight``; ``models/A_2_net_loss.py:33-42`` of
    aassxun/DSH_Analysis)."""
    if not is_asymmetric(cfg):
        return
    fine = it >= cfg.aux_start_iter
    loss_fn.reconstruction = cfg.reconstruction and fine
    loss_fn.decorrelation = cfg.decorrelation and fine
    loss_fn.self_consistency = cfg.self_consistency
    loss_fn.image_loss.weight = cfg.image_weight_finetune if fine else cfg.image_weight


def float_output(out: Any) -> Any:
    """Outputs computed under autocast, cast to float32 for the loss."""

    def cast(v: Any) -> Any:
        return v.float() if torch.is_tensor(v) and v.is_floating_point() else v

    if dataclasses.is_dataclass(out):
        return dataclasses.replace(
            out, **{f.name: cast(getattr(out, f.name)) for f in dataclasses.fields(out)}
        )
    if hasattr(out, "_replace"):
        return out._replace(**{k: cast(v) for k, v in out._asdict().items()})
    return out


def _match_parameter_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give each restored per-parameter state tensor (SGD's momentum) its parameter's
    strides. A checkpoint keeps the layout it was written in, and the model is
    channels-last on CUDA only: the CUDA fused kernel refuses unequal strides, and the CPU
    one walks raw memory, adding momentum to the wrong weights without a word."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for name, value in state.items():
                if (
                    torch.is_tensor(value)
                    and value.shape == p.shape
                    and value.stride() != p.stride()
                ):
                    state[name] = torch.empty_like(p, dtype=value.dtype).copy_(value)


class Optimisation:
    """The loss, SGD, its learning-rate schedule and mixed precision of one run.

    ``net`` is what a step calls (DistributedDataParallel-wrapped with several
    processes); ``model`` is the bare network whose weights a checkpoint holds.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        model: torch.nn.Module,
        net: torch.nn.Module,
        device: torch.device,
        autocast: torch.dtype | None,
    ) -> None:
        self.cfg = cfg
        self.model, self.net = model, net
        self.autocast = autocast  # :func:`fghash.encoding.loop.eval_autocast`, as evaluation
        self.loss_fn = build_loss(cfg).to(device)
        self.optimizer = make_sgd(model.parameters(), cfg)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(cfg.lr_milestones), gamma=cfg.lr_gamma
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=autocast == torch.float16)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(
        self, images: torch.Tensor, S: torch.Tensor, B: torch.Tensor, B_rows: torch.Tensor | None
    ) -> tuple[Any, torch.Tensor, dict[str, Any]]:
        """One SGD step on a batch: ``(float32 outputs, total loss, per-term values)``."""
        cast = (
            torch.autocast("cuda", dtype=self.autocast)
            if self.autocast is not None
            else nullcontext()
        )
        with cast:
            out = self.net(images)
        out = float_output(out)
        total, terms = self.loss_fn(out, images, S, B, B_rows)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if hasattr(self.loss_fn, "step"):
            self.loss_fn.step()  # HashNet's continuation
        return out, total, terms

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint entries of the network, optimizer, schedule, loss and scaler."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s entries; a new ``lr`` rescales the current
        (possibly decayed) learning rate by new/old."""
        self.model.load_state_dict(state["model"])  # copies into the model's own layout
        self.optimizer.load_state_dict(state["optimizer"])
        _match_parameter_layout(self.optimizer)
        self.scheduler.load_state_dict(state["scheduler"])
        self.loss_fn.load_state_dict(state["loss"])
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        saved_lr = json.loads(state["config"])["lr"]
        if saved_lr != self.cfg.lr:
            log.info("resuming with --lr %g instead of %g", self.cfg.lr, saved_lr)
            for group in self.optimizer.param_groups:
                group["lr"] *= self.cfg.lr / saved_lr
                group["initial_lr"] = self.cfg.lr
            self.scheduler.base_lrs = [self.cfg.lr for _ in self.scheduler.base_lrs]


class EpochSums:
    """One epoch's loss sums, kept on the device so that no step waits for it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, Any] = {}
        self.bad = torch.zeros((), dtype=torch.bool, device=device)  # a NaN or inf so far
        self.seen = self.batches = 0

    def add(self, total: torch.Tensor, terms: dict[str, Any], n: int) -> None:
        self.bad |= ~torch.isfinite(total.detach())
        self.seen += n
        self.batches += 1
        for name, value in terms.items():
            self.sums[name] = self.sums.get(name, 0.0) + value * n

    def mean_total(self) -> float:
        return float(self.sums["total"]) / self.seen

    def reduced(self, dist: Dist) -> tuple[int, dict[str, float]]:
        """``(images, per-term means)`` over all processes: one transfer, one sum."""
        names = sorted(self.sums)
        packed = torch.tensor(
            [float(self.seen)] + [0.0] * len(names), dtype=torch.float64, device=self.device
        )
        for i, name in enumerate(names):
            packed[i + 1] = self.sums[name]
        values = dist.all_reduce_sum(packed).tolist()
        n_all = int(values[0])
        means = (
            {name: v / n_all for name, v in zip(names, values[1:], strict=True)} if n_all else {}
        )
        return n_all, means
