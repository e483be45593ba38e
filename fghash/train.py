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
   and A²-Net's reconstruction and decorrelation terms (see :mod:`fghash.losses`);
3. with the network fixed, updates B bit by bit (ADSH's discrete step) from
   ``U = [u_i]_{i∈Ω}`` collected during the epochs
   (:func:`fghash.adsh.update_database_codes`).

The step learning-rate decay counts outer iterations.

DPSH and HashNet are symmetric baselines: the same outer loop samples Ω and trains the
network on pairs within each batch, but there are no learned database codes; their
database codes are the network's own codes of the database images, ``sign(tanh(v))``,
computed after training (and for validation).

Run folder::

    config.json              resolved TrainConfig
    metrics.jsonl            one object per epoch ({"event": "epoch", ...every loss term, lr})
                             and per evaluation ({"event": "eval", "split": "val", "map": ...})
    checkpoints/last.pt      model, optimiser, scheduler, scaler, B, Ω and U, RNG states,
                             position (written atomically after every epoch)
    database_codes.npy       int8 ±1 [N, k], the database codes B, when training ends
    database_indices.npy     int64 [N], row j of B is item database_indices[j] of the train split

Resuming continues exactly: every epoch reseeds the generators from (seed, outer
iteration, epoch) and Ω is drawn from (seed, outer iteration), so a run stopped after
any epoch and resumed gives the same B and weights as an uninterrupted one (on CPU; CUDA
kernels are not all deterministic).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from fghash.batching import PositionDataset
from fghash.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from fghash.config import TrainConfig, load_config, parse_bits, save_config
from fghash.device import resolve_device
from fghash.errors import FghashError
from fghash.retrieval import hamming_map

__all__ = [
    "TrainResult",
    "train",
    "train_many",
    "build_model",
    "split_train_indices",
    "CHECKPOINT",
    "RESUMABLE_FIELDS",
]

log = logging.getLogger(__name__)

CHECKPOINT = Path("checkpoints") / "last.pt"
# Options that may change when a run is resumed; everything else must match config.json.
RESUMABLE_FIELDS = frozenset(
    {"max_iter", "eval_every", "device", "num_workers", "data_root", "amp", "skip_corrupt"}
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


def build_model(cfg: TrainConfig) -> torch.nn.Module:
    """The network a config describes (:func:`fghash.models.create_model`)."""
    from fghash.models import create_model

    kwargs: dict[str, Any] = dict(
        bits=cfg.bits,
        backbone=cfg.backbone,
        weights=cfg.weights,
        num_attention=cfg.num_attention,
        image_size=cfg.image_size,
    )
    if cfg.method == "a2net":
        kwargs.update(attention=cfg.attention, self_consistency=cfg.self_consistency)
    return create_model(cfg.method, **kwargs)


def _build_loss(cfg: TrainConfig) -> torch.nn.Module:
    from fghash import losses

    if cfg.method in ("a2net", "adsh"):
        return losses.A2NetLoss(
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
        )
    if cfg.method == "dpsh":
        return losses.DPSHLoss(cfg.bits)
    return losses.HashNetLoss(cfg.bits)


def _asymmetric(cfg: TrainConfig) -> bool:
    return cfg.method in ("a2net", "adsh")


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


class _Metrics:
    """``metrics.jsonl``: one JSON object per line, flushed as written."""

    def __init__(self, path: Path, keep_lines: int | None) -> None:
        self.path = path
        lines: list[str] = []
        if keep_lines is not None and path.exists():
            lines = path.read_text().splitlines()[:keep_lines]
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in lines))
        os.replace(tmp, path)
        self.lines = len(lines)

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
        self.lines += 1


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

    train_tf = build_transform(True, cfg.image_size, resize=cfg.resize)
    eval_tf = build_transform(False, cfg.image_size, resize=cfg.resize)
    ds = load_dataset(
        cfg.dataset, cfg.data_root, split="train", transform=train_tf, skip_corrupt=cfg.skip_corrupt
    )
    ds_eval = load_dataset(
        cfg.dataset, cfg.data_root, split="train", transform=eval_tf, skip_corrupt=cfg.skip_corrupt
    )
    return ds, ds_eval


def _nan_error(it: int, epoch: int, cfg: TrainConfig, ckpt: Path, have_ckpt: bool) -> FghashError:
    kept = (
        f"the last good checkpoint {ckpt} is kept unchanged"
        if have_ckpt
        else "no checkpoint had been written yet"
    )
    return FghashError(
        f"the training loss became NaN or infinite in outer iteration {it + 1}/{cfg.max_iter}, "
        f"epoch {epoch + 1}/{cfg.epochs}, so training stopped; {kept} (lower --lr and resume)."
    )


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
    when the loss becomes NaN or infinite (the last checkpoint is left as it was).
    """
    from tqdm.auto import tqdm

    from fghash.data import collate_skip_none

    cfg = config.validate()
    run_dir = Path(run_dir)
    ckpt_path = run_dir / CHECKPOINT
    state: dict[str, Any] | None = None
    if resume:
        if not ckpt_path.is_file():
            raise FghashError(f"{run_dir} holds no checkpoint to resume; run without --resume.")
        cfg = _check_resume(load_config(run_dir / "config.json"), cfg, run_dir).validate()
        state = load_checkpoint(ckpt_path)
    elif ckpt_path.exists():
        raise FghashError(
            f"{run_dir} already holds a trained run; pass --resume to continue it "
            "or choose another --out."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.json")
    metrics = _Metrics(run_dir / "metrics.jsonl", state["metrics_lines"] if state else 0)

    device = resolve_device(cfg.device)
    use_amp = bool(cfg.amp and device.type == "cuda")
    _seed_all(cfg.seed)

    ds, ds_eval = _load_data(cfg)
    labels_all = np.asarray(ds.labels, dtype=np.int64)
    db_idx, val_idx = split_train_indices(len(labels_all), cfg.val_fraction, cfg.seed)
    n_db, k = len(db_idx), cfg.bits
    m = min(cfg.num_samples, n_db)
    db_labels = labels_all[db_idx]

    model = build_model(cfg).to(device)
    loss_fn = _build_loss(cfg).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(cfg.lr_milestones), gamma=cfg.lr_gamma
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    if state is None:
        rng_b = np.random.default_rng(_derived_seed(cfg.seed, 0xB))
        B = np.where(rng_b.standard_normal((n_db, k)) >= 0, 1, -1).astype(np.float32)
        start_it, start_epoch, omega, U = 0, 0, None, None
        val_map: float | None = None
    else:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if use_amp and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        if not np.array_equal(state["database_indices"].numpy(), db_idx):
            raise FghashError(
                f"{run_dir}: the training split no longer matches the checkpoint "
                "(different data set files?); start a new run."
            )
        B = state["B"].numpy().astype(np.float32)
        start_it, start_epoch = int(state["next_iter"]), int(state["next_epoch"])
        omega = state["omega"].numpy() if state.get("omega") is not None else None
        U = state["U"].to(device) if state.get("U") is not None else None
        val_map = state.get("val_map")

    def checkpoint(next_iter: int, next_epoch: int, omega_: Any, U_: Any) -> None:
        save_checkpoint(
            ckpt_path,
            {
                "format": "fghash.train.checkpoint",
                "version": 1,
                "config": json.dumps(cfg.to_dict(), sort_keys=True),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if use_amp else {},
                "B": torch.from_numpy(B.astype(np.int8)),
                "database_indices": torch.from_numpy(db_idx),
                "val_indices": torch.from_numpy(val_idx),
                "omega": None if omega_ is None else torch.from_numpy(np.asarray(omega_)),
                "U": None if U_ is None else U_.detach().cpu(),
                "next_iter": next_iter,
                "next_epoch": next_epoch,
                "complete": next_iter >= cfg.max_iter,
                "rng": capture_rng_state(),
                "metrics_lines": metrics.lines,
                "val_map": val_map,
            },
        )

    history: list[dict[str, Any]] = []
    B_t = torch.from_numpy(B).to(device)
    step = 0
    for it in range(start_it, cfg.max_iter):
        first_epoch = start_epoch if it == start_it else 0
        if first_epoch == 0 or omega is None:
            first_epoch = 0
            rng_omega = np.random.default_rng(_derived_seed(cfg.seed, 0x0E, it))
            omega = np.sort(rng_omega.choice(n_db, size=m, replace=False)).astype(np.int64)
            U = torch.zeros(m, k, device=device)
        S = _similarity(db_labels[omega], db_labels, device) if _asymmetric(cfg) else None
        for epoch in range(first_epoch, cfg.epochs):
            record = _train_epoch(
                cfg,
                it,
                epoch,
                model,
                loss_fn,
                optimizer,
                scaler,
                use_amp,
                device,
                ds,
                db_idx,
                db_labels,
                omega,
                S,
                B_t,
                U,
                collate_skip_none,
                progress,
                tqdm,
                ckpt_path,
                metrics,
            )
            step += record["batches"]
            metrics.write(record)
            history.append(record)
            if epoch + 1 < cfg.epochs:
                checkpoint(it, epoch + 1, omega, U)
        if _asymmetric(cfg):
            B_t = _update_codes(B_t, U, S, omega, cfg)
            B = B_t.cpu().numpy().astype(np.float32)
        scheduler.step()
        evaluate = (
            len(val_idx)
            and cfg.eval_every
            and ((it + 1) % cfg.eval_every == 0 or it + 1 == cfg.max_iter)
        )
        if evaluate:
            val_map = _validate(
                cfg, model, ds_eval, db_idx, val_idx, labels_all, B, device, progress
            )
            metrics.write({"event": "eval", "split": "val", "iter": it, "map": val_map, "bits": k})
            log.info("outer iteration %d: val mAP %.4f", it + 1, val_map)
        if not _asymmetric(cfg) and it + 1 == cfg.max_iter:
            B = _network_codes(model, ds_eval, db_idx, device, cfg, progress)
            B_t = torch.from_numpy(B).to(device)
        omega, U = None, None
        checkpoint(it + 1, 0, None, None)

    codes = B.astype(np.int8)
    _save_npy(run_dir / "database_codes.npy", codes)
    _save_npy(run_dir / "database_indices.npy", db_idx)
    return TrainResult(
        run_dir=run_dir,
        config=cfg,
        database_codes=codes,
        database_indices=db_idx,
        iterations=cfg.max_iter,
        val_map=val_map,
        history=history,
    )


def _similarity(la: np.ndarray, lb: np.ndarray, device: torch.device) -> torch.Tensor:
    from fghash.adsh import similarity_matrix

    S = similarity_matrix(la, lb)
    S = torch.as_tensor(S, dtype=torch.float32)
    return S.to(device)


def _update_codes(
    B: torch.Tensor, U: torch.Tensor, S: torch.Tensor, omega: np.ndarray, cfg: TrainConfig
) -> torch.Tensor:
    from fghash.adsh import update_database_codes

    om = torch.from_numpy(omega).to(B.device)
    return update_database_codes(B, U.float(), S, om, cfg.gamma, cfg.bits).float()


def _train_epoch(
    cfg: TrainConfig,
    it: int,
    epoch: int,
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    use_amp: bool,
    device: torch.device,
    ds: Any,
    db_idx: np.ndarray,
    db_labels: np.ndarray,
    omega: np.ndarray,
    S: torch.Tensor | None,
    B_t: torch.Tensor,
    U: torch.Tensor,
    collate: Any,
    progress: bool,
    tqdm: Any,
    ckpt_path: Path,
    metrics: _Metrics,
) -> dict[str, Any]:
    seed = _derived_seed(cfg.seed, it, epoch)
    _seed_all(seed)
    loader = DataLoader(
        PositionDataset(ds, db_idx[omega]),
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        num_workers=cfg.num_workers,
        collate_fn=collate,
        drop_last=False,
        pin_memory=device.type == "cuda",
    )
    model.train()
    omega_t = torch.from_numpy(omega).to(device)
    labels_t = torch.from_numpy(db_labels).to(device)
    sums: dict[str, float] = {}
    n_seen = n_batches = 0
    t0 = time.perf_counter()
    bar = tqdm(
        loader,
        desc=f"{cfg.bits} bits, iter {it + 1}/{cfg.max_iter}, epoch {epoch + 1}/{cfg.epochs}",
        leave=False,
        disable=None if progress else True,
        unit="batch",
    )
    for batch in bar:
        if batch is None or len(batch[0]) == 0:
            continue
        images, _, pos = batch
        images = images.to(device, non_blocking=True)
        pos = pos.to(device)
        autocast = torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext()
        with autocast:
            out = model(images)
        out = _float_output(out)
        if S is not None:
            total, terms = loss_fn(out, images, S[pos], B_t, B_t[omega_t[pos]])
        else:
            total, terms = loss_fn(out, labels_t[omega_t[pos]])
        if not torch.isfinite(total.detach()).item():
            metrics.write(
                {"event": "nan", "iter": it, "epoch": epoch, "batch": n_batches, "bits": cfg.bits}
            )
            raise _nan_error(it, epoch, cfg, ckpt_path, ckpt_path.exists())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
        U[pos] = out.relaxed.detach().float()
        n = len(pos)
        n_seen += n
        n_batches += 1
        sums["loss"] = sums.get("loss", 0.0) + float(total.detach()) * n
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(value) * n
        if n_batches % 10 == 0:
            bar.set_postfix(loss=f"{sums['loss'] / n_seen:.4g}")
    if n_seen == 0:
        raise FghashError(
            f"no image of the {len(omega)} sampled in outer iteration {it + 1} could be read; "
            f"check the files under {cfg.data_root}."
        )
    record: dict[str, Any] = {
        "event": "epoch",
        "bits": cfg.bits,
        "iter": it,
        "epoch": epoch,
        "lr": optimizer.param_groups[0]["lr"],
        "images": n_seen,
        "skipped": len(omega) - n_seen,
        "batches": n_batches,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    record.update({name: total / n_seen for name, total in sums.items()})
    if record["skipped"]:
        log.warning("skipped %d unreadable image(s) in this epoch", record["skipped"])
    return record


def _network_codes(
    model: torch.nn.Module,
    ds_eval: Any,
    indices: np.ndarray,
    device: torch.device,
    cfg: TrainConfig,
    progress: bool,
) -> np.ndarray:
    """±1 codes sign(tanh(v)) of the given train items by the network (0 rows if unreadable)."""
    from fghash.encode import encode_images

    enc = encode_images(
        model,
        ds_eval,
        indices,
        device=device,
        batch_size=max(cfg.batch_size, 64),
        num_workers=cfg.num_workers,
        progress=progress,
        desc="encoding database",
    )
    out = np.ones((len(indices), cfg.bits), dtype=np.float32)
    out[enc.positions] = np.where(enc.relaxed >= 0, 1.0, -1.0)
    return out


def _validate(
    cfg: TrainConfig,
    model: torch.nn.Module,
    ds_eval: Any,
    db_idx: np.ndarray,
    val_idx: np.ndarray,
    labels_all: np.ndarray,
    B: np.ndarray,
    device: torch.device,
    progress: bool,
) -> float:
    """mAP of held-out train images (queries, network codes) against the database codes."""
    from fghash.encode import encode_images

    q = encode_images(
        model,
        ds_eval,
        val_idx,
        device=device,
        batch_size=max(cfg.batch_size, 64),
        num_workers=cfg.num_workers,
        progress=progress,
        desc="encoding val",
    )
    db = B if _asymmetric(cfg) else _network_codes(model, ds_eval, db_idx, device, cfg, progress)
    q_signs = np.where(q.relaxed >= 0, 1.0, -1.0)
    return hamming_map(q_signs, labels_all[val_idx][q.positions], db, labels_all[db_idx])


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


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
