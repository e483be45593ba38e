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

A²-Net's reference code trains in two stages: the hash and quantization terms (and the
journal's image term at weight 0.01) first, then a fine-tune stage from outer iteration
``aux_start_iter`` that adds the reconstruction and decorrelation terms and raises the
image weight to 0.1. ``aux_start_iter = 0`` (the paper protocol) is the fine-tune stage
throughout: every term of Eq. 13 from the start.

Run folder: see :mod:`fghash.runs.folder` (config.json, metrics.jsonl, one checkpoint per
outer iteration, the learned database codes when training ends).

Speed. The loop keeps the device busy: on CUDA, DataLoader workers (chosen from the CPU
count unless ``num_workers`` is given) with pinned memory, persistent over an outer
iteration's epochs and prefetching; ``channels_last`` tensors; ``cudnn.benchmark``;
autocast (:mod:`fghash.training.step`). Nothing in a step waits for the device: the
per-term sums stay on the device, and the loss is checked for NaN every
``nan_check_every`` steps and at every epoch's end (a NaN stops training with one
sentence; the last checkpoint, written at the end of the last completed outer iteration,
is left as it was). Validation encodes through the loop ``fghash encode`` and image
queries use (:mod:`fghash.encoding.loop`), so it sees the codes a codes file will hold.

Resuming continues exactly (:mod:`fghash.training.resume`): a checkpoint is written once
per completed outer iteration; Ω is drawn from (seed, iteration), every epoch reseeds the
generators and the batch order from (seed, iteration, epoch), and data-loader workers are
seeded from (seed, iteration) (:mod:`fghash.training.sampling`), so a run killed anywhere
in an outer iteration and resumed repeats that iteration and ends with the same B and
weights as an uninterrupted one (on CPU; CUDA kernels are not all deterministic).

Several processes (``torchrun --nproc_per_node N -m fghash train …``, see
:mod:`fghash.training.distributed`): the model is wrapped in DistributedDataParallel (with
SyncBatchNorm on CUDA); every global batch of ``batch_size`` sampled images is split
between the processes, U is summed over them before the discrete update of B (so every
process updates B from all of Ω), and only rank 0 writes config.json, metrics.jsonl,
the checkpoints and the codes and validates, while the others wait on the host and stop
with it if it fails. Every process takes the same steps: a batch whose share is all
unreadable on some process is skipped by all. What differs from one process: each
process draws its own augmentations (seeded with its rank; rank 0 draws as one
process does), BatchNorm statistics on CPU come from each process's share of a
batch, and the decorrelation term sees each share separately (its Gram matrix is over
n/N images); the hash, quantization, reconstruction and image terms are means over the
batch, so their averaged gradients equal one process's. DPSH and HashNet keep a
per-step memory bank and are trained in one process only.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from fghash.encoding.loop import eval_autocast, prepare_model
from fghash.encoding.positions import PositionDataset
from fghash.errors import FghashError
from fghash.runs.checkpoint import capture_rng_state, restore_rng_state
from fghash.runs.config import TrainConfig, parse_bits, save_config
from fghash.runs.fingerprint import record_training_data
from fghash.runs.folder import (
    CHECKPOINT,
    CONFIG,
    DATABASE_CODES,
    DATABASE_INDICES,
    bits_folder,
    build_model,
    save_iteration_checkpoint,
)
from fghash.training.distributed import Dist, setup
from fghash.training.resume import MetricsLog, starting_state
from fghash.training.sampling import (
    RankBatches,
    TrainData,
    auto_num_workers,
    derived_seed,
    rank_seed,
    sample_omega,
    seed_all,
)
from fghash.training.step import EpochSums, Optimisation, is_asymmetric, set_loss_stage
from fghash.training.validation import NetworkCodes
from fghash.util.atomic import atomic_path
from fghash.util.device import resolve_device
from fghash.util.progress import Progress
from fghash.util.threads import adapt_threads

__all__ = ["TrainResult", "train", "train_many"]

log = logging.getLogger(__name__)


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


class _Run:
    """The state of one training run and the steps that change it.

    Collaborators: :class:`~fghash.training.sampling.TrainData` (the data and its split),
    :class:`~fghash.training.step.Optimisation` (loss, SGD, schedule, mixed precision),
    :class:`~fghash.training.validation.NetworkCodes` (the network's codes, through the
    encode loop every encoder uses) and :class:`~fghash.training.resume.MetricsLog`. The
    run itself holds B, where it is (``next_iter``, ``next_epoch``), Ω and U.
    """

    def __init__(
        self, cfg: TrainConfig, run_dir: Path, progress: bool, dist: Dist, device: torch.device
    ) -> None:
        self.cfg, self.run_dir, self.dist, self.device = cfg, run_dir, dist, device
        self.ckpt_path = run_dir / CHECKPOINT
        self.progress = progress and dist.main
        self.cuda = device.type == "cuda"
        self.num_workers = (
            auto_num_workers(device, dist.world) if cfg.num_workers is None else cfg.num_workers
        )
        if self.cuda:
            torch.backends.cudnn.benchmark = True
        seed_all(cfg.seed)
        self.data = TrainData.load(cfg)
        self.m = min(cfg.num_samples, len(self.data.db_idx))
        model = prepare_model(build_model(cfg), device)
        net = model  # what the steps call (DDP-wrapped if several processes)
        if dist.active:
            model, net = self._wrap_ddp(model)
        autocast = eval_autocast(cfg, device)  # training's and every encoder's choice
        self.opt = Optimisation(cfg, model, net, device, autocast)
        self.codes = NetworkCodes(
            model,
            self.data.ds_eval,
            device,
            batch_size=max(cfg.batch_size, 64),
            num_workers=self.num_workers,
            autocast=autocast,
            progress=self.progress,
        )
        self.B = self._initial_codes()
        self.next_iter = self.next_epoch = 0
        self.omega: np.ndarray | None = None
        self.U: torch.Tensor | None = None
        self.loader: DataLoader | None = None
        self.val_map: float | None = None
        self.metrics: MetricsLog

    def _initial_codes(self) -> torch.Tensor:
        """B: learned ±1 database codes (asymmetric methods) or, for DPSH/HashNet, the
        memory bank of the latest raw outputs v of the database items their losses use."""
        from fghash.training.adsh import init_database_codes

        n_db, bits = len(self.data.db_idx), self.cfg.bits
        if is_asymmetric(self.cfg):
            labels = self.data.db_labels if self.cfg.init_codes == "class" else None
            return init_database_codes(n_db, bits, self.cfg.seed, self.device, labels)
        return torch.zeros((n_db, bits), dtype=torch.float32, device=self.device)

    def _wrap_ddp(self, model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
        """``(model, DDP-wrapped model)``; on CUDA the model gets SyncBatchNorm first."""
        from torch.nn.parallel import DistributedDataParallel

        if not is_asymmetric(self.cfg):
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
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            return model, DistributedDataParallel(model, device_ids=[self.device])
        return model, DistributedDataParallel(model)

    # --- checkpoints -------------------------------------------------------------
    def restore(self, state: dict[str, Any]) -> None:
        if not np.array_equal(state["database_indices"].numpy(), self.data.db_idx):
            raise FghashError(
                f"{self.run_dir}: the training split no longer matches the checkpoint "
                "(different data set files?); start a new run."
            )
        self.opt.load_state_dict(state)
        restore_rng_state(state["rng"])
        self.B = state["B"].to(self.device, torch.float32)
        self.next_iter, self.next_epoch = int(state["next_iter"]), int(state["next_epoch"])
        if state.get("omega") is not None:  # a version-1 checkpoint written mid-iteration
            self.omega = state["omega"].numpy()
            self.U = state["U"].to(self.device)
        self.val_map = state.get("val_map")

    def save(self) -> None:
        """Rank 0 writes the checkpoint of the completed outer iterations; all wait for it
        (and stop with it if it fails)."""
        self.dist.on_main(self._write_checkpoint)

    def _write_checkpoint(self) -> None:
        save_iteration_checkpoint(
            self.run_dir,
            {
                "format": "fghash.train.checkpoint",
                "version": 2,
                "config": json.dumps(self.cfg.to_dict(), sort_keys=True),
                **self.opt.state_dict(),
                "B": self.B.detach().cpu().clone(),
                "database_indices": torch.from_numpy(self.data.db_idx),
                "val_indices": torch.from_numpy(self.data.val_idx),
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

    # --- one outer iteration -----------------------------------------------------
    def sample(self, it: int) -> None:
        """Draw Ω for outer iteration ``it`` (from the seed and ``it`` only)."""
        self.omega = sample_omega(self.cfg.seed, it, len(self.data.db_idx), self.m)
        self.U = torch.zeros(self.m, self.cfg.bits, device=self.device)

    def begin(self, it: int) -> None:
        """Build the iteration's data loader; its workers live through the epochs over Ω."""
        from fghash.data import collate_skip_none

        assert self.omega is not None
        self.batches = RankBatches(self.m, self.cfg.batch_size, self.dist.rank, self.dist.world)
        workers = self.num_workers
        self.loader = DataLoader(
            PositionDataset(self.data.ds, self.data.db_idx[self.omega]),
            batch_sampler=self.batches,
            num_workers=workers,
            collate_fn=collate_skip_none,
            pin_memory=self.cuda,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            generator=torch.Generator().manual_seed(self._worker_seed(it)),
        )

    def _worker_seed(self, it: int) -> int:
        """The data-loader workers' base seed: from (seed, iteration), and the rank."""
        return rank_seed(derived_seed(self.cfg.seed, 0x5EED, it), self.dist.rank)

    def end(self) -> None:
        self.loader = None  # ends the persistent workers

    def similarity(self) -> torch.Tensor:
        from fghash.training.adsh import similarity_matrix

        db_labels = self.data.db_labels
        S = similarity_matrix(db_labels[self.omega], db_labels)
        return torch.as_tensor(S, dtype=torch.float32).to(self.device)

    def epoch(self, it: int, epoch: int, S: torch.Tensor) -> dict[str, Any]:
        """Train one epoch over Ω; its metrics record (per-term means over all processes)."""
        cfg = self.cfg
        assert self.omega is not None and self.U is not None and self.loader is not None
        seed = derived_seed(cfg.seed, it, epoch)
        seed_all(rank_seed(seed, self.dist.rank))  # each process its own augmentations
        self.batches.seed = seed  # one batch order for all
        self.opt.net.train()
        # every row of U is rewritten this epoch (unreadable images stay 0), so that the
        # processes' U can be summed: each row comes from the one process that saw it
        self.U.zero_()
        omega_t = torch.from_numpy(self.omega).to(self.device)
        sums = EpochSums(self.device)
        t0 = time.perf_counter()
        bar = self._bar(it, epoch)
        for images, _, pos in bar:
            if not self.cuda and (threads := adapt_threads()) is not None:
                log.info("CPU left free by other processes: %d compute thread(s) now", threads)
            if not self._all_have_images(len(pos)):
                continue
            self._step(images, pos, omega_t, S, sums)
            if sums.batches % cfg.nan_check_every == 0:
                self.check(sums.bad, it, epoch, sums.batches)
                bar.set_postfix(loss=f"{sums.mean_total():.4g}", refresh=False)
        self.check(sums.bad, it, epoch, sums.batches)
        return self._epoch_record(it, epoch, sums, time.perf_counter() - t0)

    def _all_have_images(self, n: int) -> bool:
        """Whether every process holds readable images of this batch. A process whose
        share is all unreadable has nothing to step on; all processes then skip the batch
        together, since each step's gradient all-reduce and the NaN check every
        ``nan_check_every`` steps need every process (one host-side sum per step)."""
        if not self.dist.active:
            return n > 0
        return self.dist.host_sum(int(n == 0)) == 0

    def _bar(self, it: int, epoch: int) -> Any:
        from tqdm.auto import tqdm

        cfg = self.cfg
        return tqdm(
            self.loader,
            desc=f"{cfg.bits} bits, iter {it + 1}/{cfg.max_iter}, epoch {epoch + 1}/{cfg.epochs}",
            leave=False,
            disable=None if self.progress else True,
            unit="batch",
        )

    def _step(
        self,
        images: torch.Tensor,
        pos: torch.Tensor,
        omega_t: torch.Tensor,
        S: torch.Tensor,
        sums: EpochSums,
    ) -> None:
        """One SGD step on a batch of Ω; its relaxed codes go to U (and, for the memory
        bank of DPSH/HashNet, its raw outputs to B)."""
        images = images.to(self.device, non_blocking=True)
        if self.cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        pos = pos.to(self.device, non_blocking=True)
        rows = omega_t[pos]
        asymmetric = is_asymmetric(self.cfg)
        out, total, terms = self.opt.step(
            images, S[pos], self.B, self.B[rows] if asymmetric else None
        )
        self.U[pos] = out.relaxed.detach()
        if not asymmetric:
            self.B[rows] = out.v.detach()
        sums.add(total, terms, len(pos))

    def _epoch_record(self, it: int, epoch: int, sums: EpochSums, seconds: float) -> dict[str, Any]:
        n_all, means = sums.reduced(self.dist)
        if n_all == 0:
            raise FghashError(
                f"none of the {self.m} images sampled in outer iteration {it + 1} could be "
                f"read; check the files under {self.cfg.data_root}."
            )
        record: dict[str, Any] = {
            "event": "epoch",
            "bits": self.cfg.bits,
            "iter": it,
            "epoch": epoch,
            "lr": self.opt.lr,
            "images": n_all,
            "skipped": self.m - n_all,
            "batches": sums.batches,
            "seconds": round(seconds, 3),
        }
        record.update(means)
        if record["skipped"] and self.dist.main:
            log.warning(
                "outer iteration %d, epoch %d: skipped %d unreadable image(s)%s",
                it + 1,
                epoch + 1,
                record["skipped"],
                " (and the readable ones of batches where a process had none)"
                if self.dist.active
                else "",
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
    def database_codes(self) -> np.ndarray:
        """int8 ±1 ``[N, k]``: B for asymmetric methods, else the network's codes."""
        if is_asymmetric(self.cfg):
            return self.B.cpu().numpy().astype(np.int8)
        return self.codes.database(self.data.db_idx, self.cfg.bits)

    def validate(self, it: int, db_codes: np.ndarray) -> float:
        """mAP of the held-out train images (network codes) against the database codes."""
        data = self.data
        vm = self.codes.val_map(data.val_idx, data.labels, db_codes, data.db_labels)
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
    config must match the saved one except for
    :data:`~fghash.training.resume.RESUMABLE_FIELDS`. Raises :class:`FghashError` when the
    folder already holds a run and ``resume`` is False, and when the loss becomes NaN or
    infinite (the last checkpoint is left as it was). Under torchrun every process calls
    this with the same arguments.
    """
    run_dir = Path(run_dir)
    cfg, state = starting_state(config, run_dir, resume)
    run = _open_run(cfg, run_dir, state, progress)
    history: list[dict[str, Any]] = []
    db_codes: np.ndarray | None = None
    epochs_done = Progress(
        f"training {cfg.bits} bits, epochs",
        cfg.max_iter * cfg.epochs,
        done=run.next_iter * cfg.epochs + run.next_epoch,
        logger=log,
    )
    while run.next_iter < cfg.max_iter:
        evaluated = _outer_iteration(run, history, epochs_done)
        db_codes = evaluated if evaluated is not None else db_codes
        run.save()
    if db_codes is None:
        db_codes = run.database_codes()
    codes, indices = db_codes, run.data.db_idx
    run.dist.on_main(lambda: _save_codes(run_dir, codes, indices))
    return TrainResult(
        run_dir=run_dir,
        config=cfg,
        database_codes=db_codes,
        database_indices=run.data.db_idx,
        iterations=run.next_iter,
        val_map=run.val_map,
        history=history,
    )


def _open_run(
    cfg: TrainConfig, run_dir: Path, state: dict[str, Any] | None, progress: bool
) -> _Run:
    """Set up the processes and the run folder, build the run and restore ``state``."""
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

    def write_run_files() -> None:
        save_config(cfg, run_dir / CONFIG)
        record_training_data(cfg.dataset, cfg.data_root, run.data.ds, run_dir)

    dist.on_main(write_run_files)
    run.metrics = MetricsLog(run_dir, state["metrics_lines"] if state else 0, dist.main)
    return run


def _outer_iteration(
    run: _Run, history: list[dict[str, Any]], epochs_done: Progress
) -> np.ndarray | None:
    """Run outer iteration ``run.next_iter`` (its remaining epochs, then the discrete step
    on B); the database codes when it ended with a validation, else None."""
    cfg, it = run.cfg, run.next_iter
    if run.omega is None:
        run.sample(it)
        run.next_epoch = 0
    set_loss_stage(run.opt.loss_fn, cfg, it)
    S = run.similarity()
    run.begin(it)
    while run.next_epoch < cfg.epochs:
        record = run.epoch(it, run.next_epoch, S)
        run.metrics.write(record)
        history.append(record)
        if run.dist.main:
            epochs_done.step(
                f"outer iteration {it + 1}/{cfg.max_iter}, epoch {run.next_epoch + 1}/"
                f"{cfg.epochs}, loss {record.get('total', float('nan')):.4g}"
            )
        run.next_epoch += 1
    run.end()
    if is_asymmetric(cfg) and it >= cfg.hold_codes:
        run.update_codes(S)
    run.opt.scheduler.step()
    run.omega, run.U = None, None
    run.next_iter, run.next_epoch = it + 1, 0
    last = run.next_iter == cfg.max_iter
    evaluate = len(run.data.val_idx) and cfg.eval_every
    if evaluate and (run.next_iter % cfg.eval_every == 0 or last):
        # rank 0 validates; the others wait on the host (not in an NCCL barrier, whose
        # watchdog a long validation would trip) and stop too if it fails
        db_codes = run.database_codes()  # B in every process: DDP trains B-learning methods
        run.val_map = run.dist.on_main(lambda: run.validate(it, db_codes))
        return db_codes
    return None


def _save_codes(run_dir: Path, codes: np.ndarray, indices: np.ndarray) -> None:
    _save_npy(run_dir / DATABASE_CODES, codes)
    _save_npy(run_dir / DATABASE_INDICES, indices)


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
        target = run_dir if len(lengths) == 1 else bits_folder(run_dir, b)
        results.append(train(cfg, target, resume=resume, progress=progress))
    return results
