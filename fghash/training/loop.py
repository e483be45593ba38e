"""Training with the ADSH protocol: A²-Net (and its ablations), ADSH, DPSH, HashNet.

Asymmetric training (ADSH, Jiang & Li, AAAI 2018; A²-Net, Wei et al., NeurIPS 2021).
The database Γ is the training set (less any held-out validation images); it is never
passed through the network during training. Instead each database item j keeps a learned
code ``B_j ∈ {−1, +1}^k``, initialised at random from the seed. Each outer iteration:

1. samples ``m`` images Ω ⊂ Γ (``num_samples``) and builds ``S ∈ {similarity}^{m×N}``
   between Ω and Γ from the labels;
2. trains the network for ``epochs`` epochs over Ω (SGD, batch 16) on the A²-Net loss,
   whose asymmetric term is ADSH's ``Σ_i Σ_j (u_iᵀ B_j − k S_ij)²`` with ``u_i = tanh(v_i)``
   the relaxed code of image i, plus the quantization term ``γ Σ_{i∈Ω} ‖B_i − u_i‖²``
   and A²-Net's reconstruction and decorrelation terms (see :mod:`fghash.training.losses`);
3. with the network fixed, updates B bit by bit (ADSH's discrete step) from
   ``U = [u_i]_{i∈Ω}`` collected during the epochs
   (:func:`fghash.training.adsh.update_database_codes`).

The step learning-rate decay counts outer iterations.

DPSH and HashNet are symmetric baselines: the same outer loop samples Ω and trains the
network with their pairwise losses between each batch and the whole database, through a
memory bank of the latest raw outputs ``v`` of the database items (as DPSH's reference
code keeps one; unseen items start at 0). There are no learned codes: their database codes
are the network's own codes ``sgn(tanh(v))`` of the database images after training.

A²-Net's reference code trains in two stages: the hash, quantization and decorrelation
terms (and the journal's image term at weight 0.01) first, then a fine-tune stage from
outer iteration ``aux_start_iter`` that adds the reconstruction term and raises the image
weight to 0.1. ``aux_start_iter = 0`` (the paper protocol) is the fine-tune stage
throughout: every term of Eq. 13 from the start.

Run folder: see :mod:`fghash.runs.folder` (config.json, metrics.jsonl, one checkpoint per
outer iteration, the learned database codes when training ends).

Speed. The loop keeps the device busy: on CUDA, DataLoader workers (chosen from the CPU
count unless ``num_workers`` is given) with pinned memory, persistent over an outer
iteration's epochs and prefetching; ``channels_last`` tensors; ``cudnn.benchmark``;
autocast (bfloat16, no GradScaler; float16 adds one). Nothing in a step waits for the
device: the losses skip their value checks and report tensors, the per-term sums stay
on the device, and the loss is checked for NaN every ``nan_check_every`` steps and at
every epoch's end (a NaN stops training with one sentence; the last checkpoint, written
at the end of the last completed outer iteration, is left as it was). Evaluation runs
under autocast without the image decoders.

Resuming continues exactly: a checkpoint is written once per completed outer iteration;
Ω is drawn from (seed, iteration), every epoch reseeds the generators and the batch
order from (seed, iteration, epoch), and data-loader workers are seeded from (seed,
iteration), so a run killed anywhere in an outer iteration and resumed repeats that
iteration and ends with the same B and weights as an uninterrupted one (on CPU; CUDA
kernels are not all deterministic).

Several processes (``torchrun --nproc_per_node N -m fghash train …``, see
:mod:`fghash.training.distributed`): the model is wrapped in DistributedDataParallel (with
SyncBatchNorm on CUDA); every global batch of ``batch_size`` sampled images is split
between the processes, U is summed over them before the discrete update of B (so every
process updates B from all of Ω), and only rank 0 writes config.json, metrics.jsonl,
the checkpoints and the codes. What differs from one process: each process draws its
own augmentations, BatchNorm statistics on CPU come from each process's share of a
batch, and the decorrelation term sees each share separately (its Gram matrix is over
n/N images); the hash, quantization, reconstruction and image terms are means over the
batch, so their averaged gradients equal one process's. DPSH and HashNet keep a
per-step memory bank and are trained in one process only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from fghash.encoding.loop import encode_images
from fghash.encoding.positions import PositionDataset
from fghash.errors import FghashError
from fghash.runs.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state
from fghash.runs.config import ASYMMETRIC_METHODS, TrainConfig, load_config, parse_bits, save_config
from fghash.runs.fingerprint import record_training_data
from fghash.runs.folder import CHECKPOINT, CONFIG, build_model, save_iteration_checkpoint
from fghash.training.distributed import Dist, setup
from fghash.training.validation import hamming_map
from fghash.util.atomic import atomic_path, atomic_write_text
from fghash.util.device import resolve_device
from fghash.util.progress import Progress
from fghash.util.threads import adapt_threads, usable_cores

__all__ = [
    "TrainResult",
    "train",
    "train_many",
    "build_model",
    "build_loss",
    "initial_database_codes",
    "split_train_indices",
    "auto_num_workers",
    "CHECKPOINT",
    "RESUMABLE_FIELDS",
]

log = logging.getLogger(__name__)

# Options that may change when a run is resumed; everything else must match config.json.
# A new lr rescales the current (possibly decayed) learning rate by new/old.
RESUMABLE_FIELDS = frozenset(
    {
        "max_iter",
        "eval_every",
        "device",
        "num_workers",
        "data_root",
        "amp",
        "amp_dtype",
        "skip_corrupt",
        "lr",
        "nan_check_every",
        "keep_checkpoints",
    }
)


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    run_dir: Path  # the run folder
    config: TrainConfig  # the resolved config the run used
    database_codes: np.ndarray  # int8 ±1 [N, k], codes of the database items
    database_indices: np.ndarray  # int64 [N], their positions in the train split
    iterations: int  # outer iterations completed
    val_map: float | None = None  # last validation mAP, if evaluated
    history: list[dict[str, Any]] = field(default_factory=list)  # this call's epoch records


def _derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def auto_num_workers(device: torch.device, world: int = 1) -> int:
    """DataLoader workers when ``num_workers`` is not given: none on CPU (the CPU is busy
    training); on CUDA the machine's CPUs shared by the processes, at most 8 each."""
    if device.type != "cuda":
        return 0
    return max(1, min(8, usable_cores() // max(1, world) - 1))


def split_train_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``0..n-1`` into (database, val) positions; val is a seeded random share."""
    if val_fraction <= 0:
        return np.arange(n, dtype=np.int64), np.zeros(0, dtype=np.int64)
    n_val = max(1, int(round(val_fraction * n)))
    if n_val >= n:
        raise FghashError(
            f"--val-fraction {val_fraction} leaves no training images out of {n}; lower it."
        )
    perm = np.random.default_rng(_derived_seed(seed, 0x7A1)).permutation(n)
    return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)


def initial_database_codes(n: int, bits: int, seed: int) -> np.ndarray:
    """The random ±1 codes ``[n, bits]`` (float32) that asymmetric training starts B from."""
    rng = np.random.default_rng(_derived_seed(seed, 0xB))
    return np.where(rng.standard_normal((n, bits)) >= 0, 1.0, -1.0).astype(np.float32)


def build_loss(cfg: TrainConfig) -> torch.nn.Module:
    """The loss a config describes, set up for the training loop (no per-step host syncs)."""
    from fghash.training import losses

    if _asymmetric(cfg):
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
    this torch can (one kernel per parameter instead of three or four passes over it: on
    2 CPU cores the demo's step takes 14 ms instead of 29 ms; torch < 2.4 has no fused
    SGD on the CPU and gets the plain one, with the same arithmetic)."""
    params = list(params)
    options = dict(
        lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )
    try:
        return torch.optim.SGD(params, fused=True, **options)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.SGD(params, **options)


def _asymmetric(cfg: TrainConfig) -> bool:
    return cfg.method in ASYMMETRIC_METHODS


def _set_loss_stage(loss_fn: torch.nn.Module, cfg: TrainConfig, it: int) -> None:
    """The reference's two stages: from ``aux_start_iter`` on, the reconstruction term is on
    and the image weight is ``image_weight_finetune`` (before: off and ``image_weight``)."""
    if not _asymmetric(cfg):
        return
    fine = it >= cfg.aux_start_iter
    loss_fn.reconstruction = cfg.reconstruction and fine
    loss_fn.decorrelation = cfg.decorrelation
    loss_fn.self_consistency = cfg.self_consistency
    loss_fn.image_loss.weight = cfg.image_weight_finetune if fine else cfg.image_weight


def _float_output(out: Any) -> Any:
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


class _RankBatches(Sampler[list[int]]):
    """One epoch's batches of view positions ``0..m-1``: a permutation seeded by ``seed``
    (set before each epoch) cut into global batches of ``batch_size``, each split between
    the processes (rank r takes items r, r+W, …). A last global batch too small to give
    every process an item is dropped, so all processes take the same number of steps."""

    def __init__(self, m: int, batch_size: int, rank: int = 0, world: int = 1) -> None:
        self.m, self.batch_size, self.rank, self.world = m, batch_size, rank, world
        self.seed = 0

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed)
        # the order DataLoader(shuffle=True, generator=g) takes (it draws a worker seed
        # first), so one process batches as runs made before this sampler existed
        torch.empty((), dtype=torch.int64).random_(generator=g)
        perm = torch.randperm(self.m, generator=g)
        for s in range(0, self.m, self.batch_size):
            batch = perm[s : s + self.batch_size].tolist()
            if len(batch) < self.world:
                return
            yield batch[self.rank :: self.world]

    def __len__(self) -> int:
        full, rest = divmod(self.m, self.batch_size)
        return full + (1 if rest >= self.world else 0)


class _Metrics:
    """``metrics.jsonl``: one JSON object per line, flushed as written (rank 0 only)."""

    def __init__(self, path: Path, keep_lines: int | None, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled
        self.lines = keep_lines or 0
        if not enabled:
            return
        lines: list[str] = []
        if keep_lines is not None and path.exists():
            lines = path.read_text().splitlines()[:keep_lines]
        atomic_write_text(path, "".join(line + "\n" for line in lines))
        self.lines = len(lines)

    def write(self, record: dict[str, Any]) -> None:
        self.lines += 1
        if self.enabled:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(record, sort_keys=True) + "\n")


def _check_resume(saved: TrainConfig, given: TrainConfig, run_dir: Path) -> TrainConfig:
    a, b = saved.to_dict(), given.to_dict()
    differ = sorted(k for k in a if k not in RESUMABLE_FIELDS and a[k] != b[k])
    if differ:
        raise FghashError(
            f"{run_dir} was trained with different {', '.join(differ)}; resume with the "
            f"same options (only {', '.join(sorted(RESUMABLE_FIELDS))} may change)."
        )
    return TrainConfig.from_dict({**a, **{k: b[k] for k in RESUMABLE_FIELDS}})


def _load_data(cfg: TrainConfig) -> tuple[Any, Any]:
    from fghash.data import build_transform, load_dataset

    train_tf = build_transform(True, cfg.image_size, resize=cfg.resize, crop=cfg.train_crop)
    eval_tf = build_transform(False, cfg.image_size, resize=cfg.resize)
    ds = load_dataset(
        cfg.dataset, cfg.data_root, split="train", transform=train_tf, skip_corrupt=cfg.skip_corrupt
    )
    ds_eval = load_dataset(
        cfg.dataset, cfg.data_root, split="train", transform=eval_tf, skip_corrupt=cfg.skip_corrupt
    )
    return ds, ds_eval


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype:
    if cfg.amp_dtype == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        log.info("this GPU has no bfloat16; mixed precision uses float16 with a GradScaler")
        return torch.float16
    return torch.bfloat16 if cfg.amp_dtype == "bfloat16" else torch.float16


class _Run:
    """The state of one training run and the steps that change it."""

    def __init__(
        self, cfg: TrainConfig, run_dir: Path, progress: bool, dist: Dist, device: torch.device
    ) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.ckpt_path = run_dir / CHECKPOINT
        self.progress = progress and dist.main
        self.dist = dist
        self.device = device
        self.cuda = self.device.type == "cuda"
        self.use_amp = bool(cfg.amp and self.cuda)
        self.amp_dtype = _amp_dtype(cfg, self.device)
        self.num_workers = (
            auto_num_workers(self.device, dist.world)
            if cfg.num_workers is None
            else cfg.num_workers
        )
        if self.cuda:
            torch.backends.cudnn.benchmark = True
        _seed_all(cfg.seed)
        self.ds, self.ds_eval = _load_data(cfg)
        self.labels = np.asarray(self.ds.labels, dtype=np.int64)
        self.db_idx, self.val_idx = split_train_indices(
            len(self.labels), cfg.val_fraction, cfg.seed
        )
        self.db_labels = self.labels[self.db_idx]
        n_db = len(self.db_idx)
        self.m = min(cfg.num_samples, n_db)
        self.model = build_model(cfg).to(self.device)
        if self.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net: torch.nn.Module = self.model  # what the steps call (DDP-wrapped if several)
        if dist.active:
            self.net = self._wrap_ddp()
        self.loss_fn = build_loss(cfg).to(self.device)
        self.optimizer = make_sgd(self.model.parameters(), cfg)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(cfg.lr_milestones), gamma=cfg.lr_gamma
        )
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.use_amp and self.amp_dtype == torch.float16
        )
        # B: learned ±1 database codes (asymmetric methods) or, for DPSH/HashNet, the
        # memory bank of the latest raw outputs v of the database items their losses use.
        if _asymmetric(cfg):
            init = initial_database_codes(n_db, cfg.bits, cfg.seed)
        else:
            init = np.zeros((n_db, cfg.bits), dtype=np.float32)
        self.B = torch.from_numpy(init).to(self.device)
        self.next_iter = self.next_epoch = 0
        self.omega: np.ndarray | None = None
        self.U: torch.Tensor | None = None
        self.loader: DataLoader | None = None
        self.val_map: float | None = None
        self.metrics: _Metrics

    def _wrap_ddp(self) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        if not _asymmetric(self.cfg):
            raise FghashError(
                f"--method {self.cfg.method} keeps a per-step memory bank and trains in one "
                "process only; run it without torchrun."
            )
        if self.cfg.batch_size < self.dist.world:
            raise FghashError(
                f"--batch-size {self.cfg.batch_size} is split between {self.dist.world} "
                "processes; give each at least one image."
            )
        if self.cuda:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            return DistributedDataParallel(self.model, device_ids=[self.device])
        return DistributedDataParallel(self.model)

    # --- checkpoints -------------------------------------------------------------
    def restore(self, state: dict[str, Any]) -> None:
        if not np.array_equal(state["database_indices"].numpy(), self.db_idx):
            raise FghashError(
                f"{self.run_dir}: the training split no longer matches the checkpoint "
                "(different data set files?); start a new run."
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.loss_fn.load_state_dict(state["loss"])
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        saved_lr = json.loads(state["config"])["lr"]
        if saved_lr != self.cfg.lr:
            log.info("resuming with --lr %g instead of %g", self.cfg.lr, saved_lr)
            for group in self.optimizer.param_groups:
                group["lr"] *= self.cfg.lr / saved_lr
                group["initial_lr"] = self.cfg.lr
            self.scheduler.base_lrs = [self.cfg.lr for _ in self.scheduler.base_lrs]
        self.B = state["B"].to(self.device, torch.float32)
        self.next_iter, self.next_epoch = int(state["next_iter"]), int(state["next_epoch"])
        if state.get("omega") is not None:  # a version-1 checkpoint written mid-iteration
            self.omega = state["omega"].numpy()
            self.U = state["U"].to(self.device)
        self.val_map = state.get("val_map")

    def save(self) -> None:
        """Rank 0 writes the checkpoint of the completed outer iterations; all wait for it."""
        if self.dist.main:
            save_iteration_checkpoint(
                self.run_dir,
                {
                    "format": "fghash.train.checkpoint",
                    "version": 2,
                    "config": json.dumps(self.cfg.to_dict(), sort_keys=True),
                    "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "loss": self.loss_fn.state_dict(),
                    "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
                    "B": self.B.detach().cpu().clone(),
                    "database_indices": torch.from_numpy(self.db_idx),
                    "val_indices": torch.from_numpy(self.val_idx),
                    "omega": None,
                    "U": None,
                    "next_iter": self.next_iter,
                    "next_epoch": 0,
                    "complete": self.next_iter >= self.cfg.max_iter,
                    "rng": capture_rng_state(),
                    "metrics_lines": self.metrics.lines,
                    "val_map": self.val_map,
                    "world_size": self.dist.world,
                },
                self.next_iter,
                keep=self.cfg.keep_checkpoints,
            )
        self.dist.barrier()

    # --- one outer iteration -----------------------------------------------------
    def sample(self, it: int) -> None:
        """Draw Ω for outer iteration ``it`` (from the seed and ``it`` only)."""
        rng = np.random.default_rng(_derived_seed(self.cfg.seed, 0x0E, it))
        n_db = len(self.db_idx)
        self.omega = np.sort(rng.choice(n_db, size=self.m, replace=False)).astype(np.int64)
        self.U = torch.zeros(self.m, self.cfg.bits, device=self.device)

    def begin(self, it: int) -> None:
        """Build the iteration's data loader; its workers live through the epochs over Ω."""
        from fghash.data import collate_skip_none

        assert self.omega is not None
        self.batches = _RankBatches(self.m, self.cfg.batch_size, self.dist.rank, self.dist.world)
        workers = self.num_workers
        self.loader = DataLoader(
            PositionDataset(self.ds, self.db_idx[self.omega]),
            batch_sampler=self.batches,
            num_workers=workers,
            collate_fn=collate_skip_none,
            pin_memory=self.cuda,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            generator=torch.Generator().manual_seed(_derived_seed(self.cfg.seed, 0x5EED, it)),
        )

    def end(self) -> None:
        self.loader = None  # ends the persistent workers

    def similarity(self) -> torch.Tensor:
        from fghash.training.adsh import similarity_matrix

        S = similarity_matrix(self.db_labels[self.omega], self.db_labels)
        return torch.as_tensor(S, dtype=torch.float32).to(self.device)

    def epoch(self, it: int, epoch: int, S: torch.Tensor) -> dict[str, Any]:
        from tqdm.auto import tqdm

        cfg, device = self.cfg, self.device
        assert self.omega is not None and self.U is not None and self.loader is not None
        seed = _derived_seed(cfg.seed, it, epoch)
        _seed_all(seed)
        self.batches.seed = seed
        self.net.train()
        # every row of U is rewritten this epoch (unreadable images stay 0), so that the
        # processes' U can be summed: each row comes from the one process that saw it
        self.U.zero_()
        omega_t = torch.from_numpy(self.omega).to(device)
        sums: dict[str, Any] = {}
        bad = torch.zeros((), dtype=torch.bool, device=device)
        n_seen = n_batches = 0
        t0 = time.perf_counter()
        bar = tqdm(
            self.loader,
            desc=f"{cfg.bits} bits, iter {it + 1}/{cfg.max_iter}, epoch {epoch + 1}/{cfg.epochs}",
            leave=False,
            disable=None if self.progress else True,
            unit="batch",
        )
        cast = torch.autocast("cuda", dtype=self.amp_dtype) if self.use_amp else nullcontext()
        for images, _, pos in bar:
            if not self.cuda and (threads := adapt_threads()) is not None:
                log.info("CPU left free by other processes: %d compute thread(s) now", threads)
            if len(pos) == 0:
                continue
            images = images.to(device, non_blocking=True)
            if self.cuda:
                images = images.contiguous(memory_format=torch.channels_last)
            pos = pos.to(device, non_blocking=True)
            rows = omega_t[pos]
            with cast:
                out = self.net(images)
            out = _float_output(out)
            if _asymmetric(cfg):
                total, terms = self.loss_fn(out, images, S[pos], self.B, self.B[rows])
            else:
                total, terms = self.loss_fn(out, images, S[pos], self.B, None)
            bad |= ~torch.isfinite(total.detach())
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if hasattr(self.loss_fn, "step"):
                self.loss_fn.step()  # HashNet's continuation
            self.U[pos] = out.relaxed.detach()
            if not _asymmetric(cfg):
                self.B[rows] = out.v.detach()
            n = len(pos)
            n_seen += n
            n_batches += 1
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value * n
            if n_batches % cfg.nan_check_every == 0:
                self.check(bad, it, epoch, n_batches)
                bar.set_postfix(loss=f"{float(sums['total']) / n_seen:.4g}", refresh=False)
        self.check(bad, it, epoch, n_batches)
        # one transfer (and, with several processes, one sum) for the epoch's figures
        names = sorted(sums)
        packed = torch.tensor(
            [float(n_seen)] + [0.0] * len(names), dtype=torch.float64, device=device
        )
        for i, name in enumerate(names):
            packed[i + 1] = sums[name]
        values = self.dist.all_reduce_sum(packed).tolist()
        n_all = int(values[0])
        if n_all == 0:
            raise FghashError(
                f"none of the {self.m} images sampled in outer iteration {it + 1} could be "
                f"read; check the files under {cfg.data_root}."
            )
        record: dict[str, Any] = {
            "event": "epoch",
            "bits": cfg.bits,
            "iter": it,
            "epoch": epoch,
            "lr": self.optimizer.param_groups[0]["lr"],
            "images": n_all,
            "skipped": self.m - n_all,
            "batches": n_batches,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        record.update({name: v / n_all for name, v in zip(names, values[1:], strict=True)})
        if record["skipped"] and self.dist.main:
            log.warning(
                "outer iteration %d, epoch %d: skipped %d unreadable image(s)",
                it + 1,
                epoch + 1,
                record["skipped"],
            )
        return record

    def check(self, bad: torch.Tensor, it: int, epoch: int, batch: int) -> None:
        """Stop if a loss so far was NaN or infinite (one sync; every process agrees)."""
        if self.dist.any_true(bool(bad), self.device):
            self.nan(it, epoch, batch)

    def nan(self, it: int, epoch: int, batch: int) -> None:
        self.metrics.write(
            {"event": "nan", "bits": self.cfg.bits, "iter": it, "epoch": epoch, "batch": batch}
        )
        if self.ckpt_path.exists():
            kept = f"the last good checkpoint {self.ckpt_path} is kept unchanged"
        else:
            kept = "no checkpoint had been written yet"
        raise FghashError(
            f"the training loss became NaN or infinite in outer iteration {it + 1}/"
            f"{self.cfg.max_iter}, epoch {epoch + 1}/{self.cfg.epochs}, so training stopped; "
            f"{kept} (lower --lr and resume)."
        )

    def update_codes(self, S: torch.Tensor) -> None:
        """ADSH's discrete step on B with the network fixed (asymmetric methods only), from
        U summed over the processes; rank 0's B is then everyone's."""
        from fghash.training.adsh import update_database_codes

        assert self.omega is not None and self.U is not None
        self.dist.all_reduce_sum(self.U)
        om = torch.from_numpy(self.omega).to(self.device)
        self.B = update_database_codes(
            self.B,
            self.U,
            S,
            om,
            self.cfg.gamma,
            self.cfg.bits,
            soft_similarity=self.cfg.soft_similarity,
        ).float()
        self.dist.broadcast(self.B)

    # --- codes and evaluation ----------------------------------------------------
    def network_codes(self, indices: np.ndarray, desc: str) -> tuple[np.ndarray, np.ndarray]:
        """±1 network codes sgn(tanh(v)) of train items, and which positions were read."""
        enc = encode_images(
            self.model,
            self.ds_eval,
            indices,
            device=self.device,
            batch_size=max(self.cfg.batch_size, 64),
            num_workers=self.num_workers,
            progress=self.progress,
            desc=desc,
            amp=self.use_amp,
            amp_dtype=self.amp_dtype,
        )
        return np.where(enc.relaxed >= 0, 1.0, -1.0).astype(np.float32), enc.positions

    def database_codes(self) -> np.ndarray:
        """int8 ±1 ``[N, k]``: B for asymmetric methods, else the network's codes."""
        if _asymmetric(self.cfg):
            return self.B.cpu().numpy().astype(np.int8)
        codes = np.ones((len(self.db_idx), self.cfg.bits), dtype=np.float32)
        c, pos = self.network_codes(self.db_idx, "encoding database")
        codes[pos] = c
        return codes.astype(np.int8)

    def validate(self, it: int, db_codes: np.ndarray) -> float:
        """mAP of the held-out train images (network codes) against the database codes."""
        q, pos = self.network_codes(self.val_idx, "encoding val")
        vm = hamming_map(q, self.labels[self.val_idx][pos], db_codes, self.db_labels)
        self.metrics.write(
            {"event": "eval", "split": "val", "bits": self.cfg.bits, "iter": it, "map": vm}
        )
        log.info("%d bits, outer iteration %d: val mAP %.4f", self.cfg.bits, it + 1, vm)
        return vm


def train(
    config: TrainConfig,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train one run (one code length) into ``run_dir``; see the module docstring.

    ``resume=True`` continues the run in ``run_dir`` from its last checkpoint exactly; the
    config must match the saved one except for :data:`RESUMABLE_FIELDS`. Raises
    :class:`FghashError` when the folder already holds a run and ``resume`` is False, and
    when the loss becomes NaN or infinite (the last checkpoint is left as it was). Under
    torchrun every process calls this with the same arguments.
    """
    cfg = config.validate()
    run_dir = Path(run_dir)
    ckpt_path = run_dir / CHECKPOINT
    state: dict[str, Any] | None = None
    if resume:
        if not ckpt_path.is_file():
            raise FghashError(f"{run_dir} holds no checkpoint to resume; run without --resume.")
        cfg = _check_resume(load_config(run_dir / CONFIG), cfg, run_dir).validate()
        state = load_checkpoint(ckpt_path)
    elif ckpt_path.exists():
        raise FghashError(
            f"{run_dir} already holds a trained run; pass --resume to continue it "
            "or choose another --out."
        )
    dist, device = setup(resolve_device(cfg.device))
    created = not run_dir.exists()
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    try:
        run = _Run(cfg, run_dir, progress, dist, device)
    except BaseException:
        if created and dist.main and not any(run_dir.iterdir()):
            run_dir.rmdir()  # a bad option or missing weights leave no empty run folder
        raise
    if dist.active:
        log.info("process %d of %d on %s", dist.rank, dist.world, device)
    if state is not None:
        run.restore(state)
    if dist.main:
        save_config(cfg, run_dir / CONFIG)
        record_training_data(cfg.dataset, cfg.data_root, run.ds, run_dir)
    run.metrics = _Metrics(
        run_dir / "metrics.jsonl", state["metrics_lines"] if state else 0, dist.main
    )

    history: list[dict[str, Any]] = []
    db_codes: np.ndarray | None = None
    epochs_done = Progress(
        f"training {cfg.bits} bits, epochs",
        cfg.max_iter * cfg.epochs,
        done=run.next_iter * cfg.epochs + run.next_epoch,
        logger=log,
    )
    while run.next_iter < cfg.max_iter:
        it = run.next_iter
        if run.omega is None:
            run.sample(it)
            run.next_epoch = 0
        _set_loss_stage(run.loss_fn, cfg, it)
        S = run.similarity()
        run.begin(it)
        while run.next_epoch < cfg.epochs:
            record = run.epoch(it, run.next_epoch, S)
            run.metrics.write(record)
            history.append(record)
            if dist.main:
                epochs_done.step(
                    f"outer iteration {it + 1}/{cfg.max_iter}, epoch {run.next_epoch + 1}/"
                    f"{cfg.epochs}, loss {record.get('total', float('nan')):.4g}"
                )
            run.next_epoch += 1
        run.end()
        if _asymmetric(cfg):
            run.update_codes(S)
        run.scheduler.step()
        run.omega, run.U = None, None
        run.next_iter, run.next_epoch = it + 1, 0
        last = run.next_iter == cfg.max_iter
        evaluate = len(run.val_idx) and cfg.eval_every
        if evaluate and (run.next_iter % cfg.eval_every == 0 or last) and dist.main:
            db_codes = run.database_codes()
            run.val_map = run.validate(it, db_codes)
        run.save()

    if db_codes is None:
        db_codes = run.database_codes()
    if dist.main:
        _save_npy(run_dir / "database_codes.npy", db_codes)
        _save_npy(run_dir / "database_indices.npy", run.db_idx)
    dist.barrier()
    return TrainResult(
        run_dir=run_dir,
        config=cfg,
        database_codes=db_codes,
        database_indices=run.db_idx,
        iterations=run.next_iter,
        val_map=run.val_map,
        history=history,
    )


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".tmp") as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def train_many(
    config: TrainConfig,
    bits: str | int | Sequence[int],
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool = True,
) -> list[TrainResult]:
    """Train one run per code length. One length trains into ``run_dir`` itself; several
    train into ``run_dir/bits-12``, ``run_dir/bits-24``, ... in the order given."""
    lengths = parse_bits(bits)
    run_dir = Path(run_dir)
    results = []
    for b in lengths:
        cfg = TrainConfig.from_dict({**config.to_dict(), "bits": b})
        target = run_dir if len(lengths) == 1 else run_dir / f"bits-{b}"
        results.append(train(cfg, target, resume=resume, progress=progress))
    return results
