"""Hashing losses: the A²-Net terms (one small module each), DPSH and HashNet.

Shape follows pytorch-metric-learning: :class:`HashLoss.forward` checks its tensor inputs
(finite values, shapes) and then calls ``compute_loss``. Notation: a batch of ``n``
images, ``k`` bits, features ``x ∈ R^d``, relaxed codes ``V′ = tanh(W X)`` (rows
``u_i``), ``N`` database items with ±1 codes ``B`` (rows ``b_j``), ``Ω`` the batch's rows
in the database, and ``S ∈ {0,1}^{n×N}`` the similarity of the batch to the database
(:func:`fghash.training.adsh.similarity_matrix`).

Scales follow the A²-Net reference code (``A_2_net_loss.py``; ``β = 12/k`` and the
``1/(nN)`` of ADSH's own loss) so that ``gamma=200`` means what it means there. The
reference trains in two stages: asymmetric + quantization (+ the image term at weight
0.01) first, then a fine-tune stage that adds the reconstruction and decorrelation terms
(and raises the image weight to 0.1); :class:`A2NetLoss`'s flags and the image weight
are plain attributes, so a trainer can switch them per outer iteration (and the flags
reproduce the paper's ablation, Table 2).

Speed: every ``forward`` checks that its tensor inputs are finite, which costs one
GPU→CPU synchronisation per tensor, and reports its parts as Python floats (one more
each). A training loop sets ``check_values = False`` and ``tensor_parts = True`` on the
loss: then nothing in it waits for the device, and the loop checks for NaN itself.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fghash.errors import FghashError
from fghash.models.a2net import HashOutput
from fghash.training.adsh import similarity_targets

__all__ = [
    "HashLoss",
    "FeatureReconstructionLoss",
    "DecorrelationLoss",
    "AsymmetricHashLoss",
    "QuantizationLoss",
    "ImageReconstructionLoss",
    "A2NetLoss",
    "DPSHLoss",
    "HashNetLoss",
]


def _finite(name: str, t: Any) -> None:
    if isinstance(t, HashOutput):
        for field in ("v", "relaxed", "x", "x_rec", "image_rec", "image_rec_code"):
            _finite(f"{name}.{field}", getattr(t, field))
    elif isinstance(t, Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise FghashError(
            f"loss input {name} contains NaN or infinity; lower the learning rate or check the data."
        )


def _shape(name: str, t: Tensor | None, shape: tuple[int | None, ...]) -> None:
    if t is None:
        raise FghashError(f"loss input {name} is required for the enabled loss terms.")
    ok = t.ndim == len(shape) and all(
        s is None or s == d for s, d in zip(shape, t.shape, strict=True)
    )
    if not ok:
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise FghashError(f"loss input {name} must have shape {want}, got {list(t.shape)}.")


class HashLoss(nn.Module):
    """Base class: ``forward`` validates the inputs, then calls ``compute_loss``.

    Subclasses implement ``compute_loss`` (and ``check_inputs`` for shapes); every tensor
    argument (and every tensor field of a :class:`HashOutput`) must be finite, unless
    ``check_values`` is off. Parts are floats, or detached 0-d tensors with ``tensor_parts``.
    """

    check_values: bool = True  # finite-value checks (a host sync per tensor)
    tensor_parts: bool = False  # parts as detached tensors instead of floats (no host sync)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.check_values:
            bound = inspect.signature(self.compute_loss).bind(*args, **kwargs)
            for name, value in bound.arguments.items():
                _finite(name, value)
        self.check_inputs(*args, **kwargs)
        return self.compute_loss(*args, **kwargs)

    def report(self, parts: dict[str, Any]) -> dict[str, Any]:
        """The loss parts as the caller asked for them (floats or detached tensors)."""
        out: dict[str, Any] = {}
        for name, t in parts.items():
            if isinstance(t, Tensor):
                t = t.detach() if self.tensor_parts else float(t.detach())
            out[name] = t
        return out

    def check_inputs(self, *args: Any, **kwargs: Any) -> None:
        """Raise :class:`FghashError` when shapes do not fit (default: no check)."""

    def compute_loss(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


class FeatureReconstructionLoss(HashLoss):
    """Attribute-vector reconstruction, A²-Net Eq. 6–7, the first term of Eq. 13 (tied
    encoder–decoder):

        L_rec = mean_{i,d} (x_i − Wᵀ v′_i)²  +  λ · mean_{i,b} (W x_i − v′_i)²,   v′ = tanh(W x).

    ``V′`` is the relaxed code: the reference decodes ``Wᵀ tanh(W x)`` and averages
    (``MSELoss``) over the ``n·d`` entries. The reference code keeps only the first term
    (``lam=0`` reproduces it); the second term, weighted by the paper's ``λ = 1``, ties the
    linear encoder output to the code it is relaxed into.
    """

    def __init__(self, lam: float = 1.0) -> None:
        super().__init__()
        self.lam = float(lam)

    def check_inputs(self, x: Tensor, x_rec: Tensor, v: Tensor, relaxed: Tensor) -> None:
        _shape("x_rec", x_rec, tuple(x.shape))
        _shape("relaxed", relaxed, tuple(v.shape))

    def compute_loss(self, x: Tensor, x_rec: Tensor, v: Tensor, relaxed: Tensor) -> Tensor:
        loss = F.mse_loss(x_rec, x)
        if self.lam:
            loss = loss + self.lam * F.mse_loss(v, relaxed)
        return loss


class DecorrelationLoss(HashLoss):
    """Decorrelation of the attribute vectors (A²-Net, feature decorrelation constraint; the
    α-term of Eq. 13):

        L_dec = α · mean_{a,b} ((V′ᵀ V′ − n I_k)²_{ab}),   V′ ∈ R^{n×k},

    i.e. the ``k×k`` Gram matrix of the bits over the batch (the paper's ``V′V′ᵀ`` with
    ``V′ ∈ R^{k×n}``) is pushed to ``n I``: bits uncorrelated, each of norm ``√n``. The
    default ``α = 1/(n·k)`` applied to the mean over the ``k²`` entries is exactly the
    reference's ``mse_loss(FᵀF, nI) / n / k``.
    """

    def __init__(self, alpha: float | None = None) -> None:
        super().__init__()
        self.alpha = alpha

    def check_inputs(self, relaxed: Tensor) -> None:
        _shape("relaxed", relaxed, (None, None))

    def compute_loss(self, relaxed: Tensor) -> Tensor:
        n, k = relaxed.shape
        alpha = 1.0 / (n * k) if self.alpha is None else self.alpha
        gram = relaxed.T @ relaxed
        eye = torch.eye(k, device=relaxed.device, dtype=relaxed.dtype)
        return alpha * ((gram - n * eye) ** 2).mean()


class AsymmetricHashLoss(HashLoss):
    """ADSH's asymmetric similarity loss as used by A²-Net (the β-term of Eq. 13):

        L_hash = β / (n N) · Σ_{i∈Ω} Σ_{j∈Γ} (u_iᵀ b_j − k S̃_ij)²,   u_i = tanh(W F(I_i)),

    with ``b_j ∈ {−1,+1}^k`` the database codes and ``S̃ = 2S − 1 ∈ {−1,+1}`` as in ADSH (or
    the reference's soft targets, ``soft_similarity=True``). ``β = 12/k`` by default.
    Soft targets use the positive/negative ratio of the ``S`` given here (the batch's rows),
    while the reference computes it once over all sampled rows; with ``N`` database
    columns per row the two ratios are close.
    """

    def __init__(self, bits: int, beta: float | None = None, soft_similarity: bool = False) -> None:
        super().__init__()
        self.bits = int(bits)
        self.beta = 12.0 / self.bits if beta is None else float(beta)
        self.soft_similarity = bool(soft_similarity)

    def check_inputs(self, relaxed: Tensor, S: Tensor, B_db: Tensor) -> None:
        _shape("relaxed", relaxed, (None, self.bits))
        _shape("B_db", B_db, (None, self.bits))
        _shape("S", S, (relaxed.shape[0], B_db.shape[0]))

    def compute_loss(self, relaxed: Tensor, S: Tensor, B_db: Tensor) -> Tensor:
        St = similarity_targets(S, self.soft_similarity, self.check_values).to(relaxed.dtype)
        n, N = St.shape
        return self.beta / (n * N) * ((relaxed @ B_db.T - self.bits * St) ** 2).sum()


class QuantizationLoss(HashLoss):
    """ADSH's quantization term (the γ-term of Eq. 13): relaxed codes of the batch close to
    their database codes,

        L_quant = γ β / (n N) · Σ_{i∈Ω} ‖u_i − b_{ω_i}‖²,

    ``γ = 200`` (ADSH and A²-Net default) and ``β = 12/k``: the reference scales it like the
    hash term (ADSH's loss is ``(hash + γ·quant)/(nN)``), so ``num_database = N`` is needed.
    """

    def __init__(self, bits: int, gamma: float = 200.0, beta: float | None = None) -> None:
        super().__init__()
        self.bits = int(bits)
        self.gamma = float(gamma)
        self.beta = 12.0 / self.bits if beta is None else float(beta)

    def check_inputs(self, relaxed: Tensor, B_omega: Tensor, num_database: int) -> None:
        _shape("relaxed", relaxed, (None, self.bits))
        _shape("B_omega", B_omega, tuple(relaxed.shape))
        if int(num_database) < 1:
            raise FghashError(f"num_database must be positive, got {num_database}.")

    def compute_loss(self, relaxed: Tensor, B_omega: Tensor, num_database: int) -> Tensor:
        n = relaxed.shape[0]
        return self.gamma * self.beta / (n * int(num_database)) * ((relaxed - B_omega) ** 2).sum()


class ImageReconstructionLoss(HashLoss):
    """Self-consistency (journal version, "Attribute-Aware Deep Hashing with
    Self-Consistency"): against the simplicity bias of hashing (codes that keep only the
    few cues that separate the training classes), the image must be recoverable both from
    the features and from what the codes keep of them,

        L_img = w · [ mean_{i,c,h,w} (G₁(x_i) − I_i)²  +  mean_{i,c,h,w} (G₂(Wᵀ tanh(W x_i)) − I_i)² ],

    ``G₁``, ``G₂`` the two generators of the model (:class:`fghash.models.A2Net`). The
    second term's gradient reaches the hash layer ``W`` through ``dret = Wᵀ tanh(W x)``.
    ``w = 0.01`` before the fine-tune stage and 0.1 in it, as the reference (the trainer
    sets ``weight``). The reference's published loss computes the second term but leaves
    its addition commented out; we add it, as the journal describes. ``image_rec_code``
    may be ``None`` (a model without the second generator): then only the first term.
    """

    def __init__(self, weight: float = 0.01) -> None:
        super().__init__()
        self.weight = float(weight)

    def check_inputs(
        self, image_rec: Tensor, images: Tensor, image_rec_code: Tensor | None = None
    ) -> None:
        if image_rec is None:
            raise FghashError(
                "the image reconstruction loss needs a model built with self_consistency=True."
            )
        _shape("images", images, tuple(image_rec.shape))
        if image_rec_code is not None:
            _shape("image_rec_code", image_rec_code, tuple(image_rec.shape))

    def compute_loss(
        self, image_rec: Tensor, images: Tensor, image_rec_code: Tensor | None = None
    ) -> Tensor:
        loss = F.mse_loss(image_rec, images)
        if image_rec_code is not None:
            loss = loss + F.mse_loss(image_rec_code, images)
        return self.weight * loss


class A2NetLoss(HashLoss):
    """The A²-Net objective, Eq. 13: the sum of the enabled terms (each a module above).

        L = L_rec + L_dec + L_hash + L_quant (+ L_img with self-consistency)

    ``forward(out, images, S, B_db, B_omega)`` takes the model output, the input images
    (used only by the image term), ``S ∈ {0,1}^{n×N}`` (batch vs. database), the ±1 database
    codes ``B_db [N, k]`` and the batch's own database codes ``B_omega [n, k]``; inputs of
    disabled terms may be ``None``. Returns ``(loss, parts)`` with ``parts`` holding a float
    per enabled term (``reconstruction``, ``decorrelation``, ``hash``, ``quantization``,
    ``image``) and ``total``.
    """

    def __init__(
        self,
        bits: int,
        reconstruction: bool = True,
        decorrelation: bool = True,
        asymmetric: bool = True,
        quantization: bool = True,
        self_consistency: bool = False,
        lam: float = 1.0,
        alpha: float | None = None,
        beta: float | None = None,
        gamma: float = 200.0,
        image_weight: float = 0.01,
        soft_similarity: bool = False,
    ) -> None:
        super().__init__()
        self.bits = int(bits)
        self.reconstruction = reconstruction
        self.decorrelation = decorrelation
        self.asymmetric = asymmetric
        self.quantization = quantization
        self.self_consistency = self_consistency
        self.rec_loss = FeatureReconstructionLoss(lam)
        self.dec_loss = DecorrelationLoss(alpha)
        self.hash_loss = AsymmetricHashLoss(bits, beta, soft_similarity)
        self.quant_loss = QuantizationLoss(bits, gamma, beta)
        self.image_loss = ImageReconstructionLoss(image_weight)

    def check_inputs(
        self,
        out: HashOutput,
        images: Tensor | None,
        S: Tensor | None,
        B_db: Tensor | None,
        B_omega: Tensor | None,
    ) -> None:
        if not isinstance(out, HashOutput):
            raise FghashError(
                f"A2NetLoss expects the model's HashOutput, got {type(out).__name__}."
            )
        if not any(
            (
                self.reconstruction,
                self.decorrelation,
                self.asymmetric,
                self.quantization,
                self.self_consistency,
            )
        ):
            raise FghashError("A2NetLoss has every term switched off; enable at least one.")
        _shape("out.relaxed", out.relaxed, (None, self.bits))
        if self.quantization:
            _shape("B_db", B_db, (None, self.bits))

    def compute_loss(
        self,
        out: HashOutput,
        images: Tensor | None,
        S: Tensor | None,
        B_db: Tensor | None,
        B_omega: Tensor | None,
    ) -> tuple[Tensor, dict[str, float]]:
        terms: dict[str, Tensor] = {}
        if self.reconstruction:
            terms["reconstruction"] = self.rec_loss(out.x, out.x_rec, out.v, out.relaxed)
        if self.decorrelation:
            terms["decorrelation"] = self.dec_loss(out.relaxed)
        if self.asymmetric:
            terms["hash"] = self.hash_loss(out.relaxed, S, B_db)
        if self.quantization:
            terms["quantization"] = self.quant_loss(out.relaxed, B_omega, B_db.shape[0])
        if self.self_consistency:
            terms["image"] = self.image_loss(out.image_rec, images, out.image_rec_code)
        total = torch.stack(list(terms.values())).sum()
        return total, self.report({**terms, "total": total})


def _pair_side(
    out: HashOutput, S: Tensor, other: Tensor | None, bits: int, values: bool = True
) -> Tensor:
    _shape("out.v", out.v, (None, bits))
    side = out.v if other is None else other
    _shape("B_db", side, (None, bits))
    _shape("S", S, (out.v.shape[0], side.shape[0]))
    if values and not torch.all((S == 0) | (S == 1)):
        raise FghashError("the similarity matrix S must hold only 0 and 1 (use similarity_matrix).")
    return side


class DPSHLoss(HashLoss):
    """DPSH (Li et al., IJCAI 2016): pairwise likelihood + quantization on the raw outputs ``u``,

        L = mean_{ij} (log(1 + e^{Θ_ij}) − S_ij Θ_ij) + η · mean_i ‖u_i − b_i‖²,   Θ_ij = ½ u_iᵀ u_j,

    with ``b_i = sgn(u_i)`` (or ``B_omega``). Call shape as :class:`A2NetLoss`:
    ``forward(out, images, S, B_db=None, B_omega=None)``; ``B_db`` is the memory bank of the
    latest raw outputs ``v`` of all ``N`` training items (DPSH-pytorch keeps one) and ``S``
    is ``[n, N]``; with ``B_db=None`` the pairs are within the batch and ``S`` is ``[n, n]``.
    ``images`` is unused. Means instead of sums (as DeepHash-pytorch, ``η = 0.1``).
    """

    def __init__(self, bits: int, eta: float = 0.1) -> None:
        super().__init__()
        self.bits = int(bits)
        self.eta = float(eta)

    def check_inputs(
        self,
        out: HashOutput,
        images: Any,
        S: Tensor,
        B_db: Tensor | None = None,
        B_omega: Tensor | None = None,
    ) -> None:
        _pair_side(out, S, B_db, self.bits, self.check_values)
        if B_omega is not None:
            _shape("B_omega", B_omega, tuple(out.v.shape))

    def compute_loss(
        self,
        out: HashOutput,
        images: Any,
        S: Tensor,
        B_db: Tensor | None = None,
        B_omega: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        u = out.v
        other = u if B_db is None else B_db
        theta = 0.5 * (u @ other.T)
        likelihood = (F.softplus(theta) - S.to(u.dtype) * theta).mean()
        target = torch.where(u >= 0, 1.0, -1.0).to(u.dtype).detach() if B_omega is None else B_omega
        quant = self.eta * ((u - target) ** 2).mean()
        total = likelihood + quant
        return total, self.report({"likelihood": likelihood, "quantization": quant, "total": total})


class HashNetLoss(HashLoss):
    """HashNet (Cao et al., ICCV 2017): weighted pairwise cross-entropy with continuation.

        h = tanh(β_t v),   L = Σ_ij w_ij (log(1 + e^{α h_iᵀ h_j}) − S_ij α h_iᵀ h_j) / |S|,

    ``w_ij = |S|/|S₁|`` for similar and ``|S|/|S₀|`` for dissimilar pairs (class balance),
    ``α = 10/k``. Continuation: ``β_t = β₀ (1 + c·t)^p`` with ``β₀ = 1``, ``c = 0.005``,
    ``p = 0.5`` and ``t`` the iteration count, refreshed every ``step_size = 200`` iterations
    (the authors' code); the trainer calls :meth:`step` once per optimizer step. The count
    is a Python int, so reading it never waits for the device (a CUDA buffer would cost a
    sync per step); the state dict still carries it as the tensor ``iteration``, as
    checkpoints always have. Call shape as
    :class:`DPSHLoss`: ``B_db`` is a bank of raw outputs ``v`` (``tanh(β_t ·)`` is applied to
    it here) or ``None`` for pairs within the batch; ``images`` and ``B_omega`` are unused.
    """

    def __init__(
        self,
        bits: int,
        alpha: float | None = None,
        init_scale: float = 1.0,
        gamma: float = 0.005,
        power: float = 0.5,
        step_size: int = 200,
    ) -> None:
        super().__init__()
        self.bits = int(bits)
        self.alpha = 10.0 / self.bits if alpha is None else float(alpha)
        self.init_scale, self.gamma, self.power = float(init_scale), float(gamma), float(power)
        self.step_size = int(step_size)
        self.iteration = 0

    @property
    def scale(self) -> float:
        """Current continuation factor ``β_t``."""
        t = self.iteration // self.step_size * self.step_size
        return self.init_scale * math.pow(1.0 + self.gamma * t, self.power)

    def step(self) -> None:
        """Advance the continuation by one training iteration."""
        self.iteration += 1

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "iteration"] = torch.tensor(self.iteration, dtype=torch.long)

    def _load_from_state_dict(
        self,
        state_dict: Any,
        prefix: str,
        local_metadata: Any,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        key = prefix + "iteration"
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if key in state_dict:
            self.iteration = int(state_dict[key])
            if key in unexpected_keys:
                unexpected_keys.remove(key)
        elif strict:
            missing_keys.append(key)

    def check_inputs(
        self,
        out: HashOutput,
        images: Any,
        S: Tensor,
        B_db: Tensor | None = None,
        B_omega: Tensor | None = None,
    ) -> None:
        _pair_side(out, S, B_db, self.bits, self.check_values)

    def compute_loss(
        self,
        out: HashOutput,
        images: Any,
        S: Tensor,
        B_db: Tensor | None = None,
        B_omega: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        beta = self.scale
        h = torch.tanh(beta * out.v)
        other = h if B_db is None else torch.tanh(beta * B_db)
        dot = self.alpha * (h @ other.T)
        s = S.to(h.dtype)
        pair = F.softplus(dot) - s * dot
        n_pos = s.sum()
        n_all = float(s.numel())
        n_neg = n_all - n_pos
        w = torch.where(s > 0, n_all / n_pos.clamp(min=1), n_all / n_neg.clamp(min=1))
        total = (w * pair).sum() / n_all
        return total, self.report({"pairwise": total, "scale": beta, "total": total})
