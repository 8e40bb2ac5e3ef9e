"""RL math over ``[B, T]`` response tensors: masked statistics and advantage estimators.

Defaults give the numbers of verl 0.9.1 (``verl.trainer.ppo.core_algos``) to float32 rounding;
TRL's conventions are options. Every estimator returns ``(advantages, returns)``, both ``[B, T]``
like the rewards, on the rewards' device and in their dtype (bf16/fp16 are computed in float32).
Advantages are computed without autograd. Formulas: ``shared/spec/rl_math.md``.

Example:
    >>> import torch
    >>> from r1kit import rl
    >>> rewards = torch.zeros(4, 3); rewards[:, 2] = torch.tensor([1.0, 0.0, 1.0, 1.0])
    >>> mask = torch.ones(4, 3)
    >>> adv, _ = rl.grpo(rewards, mask, group_ids=["q1", "q1", "q2", "q2"])
    >>> adv[:, 0]
    tensor([ 0.7071, -0.7071,  0.0000,  0.0000])
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any, Literal

import numpy as np
import torch

from r1kit import _core
from r1kit.errors import ArgumentError, ArgumentTypeError, ShapeError

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "GroupIds",
    "agg_loss",
    "apply_kl_penalty",
    "entropy_from_logits",
    "gae",
    "gpg",
    "grpo",
    "grpo_passk",
    "kl_penalty",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "opo",
    "policy_loss",
    "reinforce_plus_plus",
    "reinforce_plus_plus_baseline",
    "remax",
    "rloo",
]

TensorPath = Literal["auto", "cpu", "device"]
Singleton = Literal["raw", "zero"]
GroupIds = torch.Tensor | np.ndarray[Any, Any] | Sequence[Hashable]


def _group_tensor(group_ids: object) -> torch.Tensor:
    """An int64 tensor of group ids; uid strings and other hashables get dense ids."""
    if isinstance(group_ids, torch.Tensor):
        return group_ids
    if isinstance(group_ids, np.ndarray):
        if group_ids.ndim != 1:
            raise ShapeError(
                f"`group_ids`: expected a 1-D array, got shape {list(group_ids.shape)}"
            )
        if group_ids.dtype.kind in "iu":
            return torch.from_numpy(np.ascontiguousarray(group_ids).astype(np.int64, copy=False))
        group_ids = group_ids.tolist()
    if isinstance(group_ids, (str, bytes)) or not isinstance(group_ids, Sequence):
        raise ArgumentTypeError(
            "`group_ids`: expected an int tensor [B], a numpy array or a sequence of hashables, "
            f"got {type(group_ids).__name__}"
        )
    try:
        # Dense ids in order of first appearance (Python's hash and equality), in Rust.
        return _core.dense_group_ids(group_ids)
    except TypeError as e:
        raise ArgumentTypeError(f"`group_ids`: expected hashable ids ({e})") from None


def masked_mean(
    values: torch.Tensor, mask: torch.Tensor, *, path: TensorPath | None = None
) -> torch.Tensor:
    """``sum(values * mask) / (sum(mask) + 1e-8)`` over all elements; NaN under mask 0 is ignored.

    On CPU tensors that autograd does not track, one fused Rust pass (f64 sums in a fixed
    order, GIL released); otherwise torch ops, so the result is differentiable.

    Args:
        values: float tensor of any shape.
        mask: the same shape (bool, int or float; 0 excludes a position).
        path: ``"cpu"`` or ``"device"`` to pick the implementation.

    Example:
        >>> masked_mean(torch.tensor([1.0, 3.0, float("nan")]), torch.tensor([1, 1, 0]))
        tensor(2.)
    """
    return _core.masked_mean(values, mask, path)


def masked_var(
    values: torch.Tensor, mask: torch.Tensor, *, path: TensorPath | None = None
) -> torch.Tensor:
    """Unbiased variance of ``values`` over ``mask`` (needs sum(mask) > 1).

    Implementations and arguments as :func:`masked_mean`.

    Example:
        >>> masked_var(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([1, 1, 0]))
        tensor(2.)
    """
    return _core.masked_var(values, mask, path)


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, *, path: TensorPath | None = None
) -> torch.Tensor:
    """``(values - mean) * rsqrt(var + 1e-8)``, statistics over ``mask``, applied everywhere.

    Args:
        values: float tensor ``[B, T]``.
        mask: ``[B, T]`` (bool, int or float; 0 excludes a position).
        path: ``"cpu"`` or ``"device"`` to pick the implementation.

    Example:
        >>> masked_whiten(torch.tensor([[1.0, 3.0, 5.0]]), torch.ones(1, 3)).round(decimals=4)
        tensor([[-1.,  0.,  1.]])
    """
    return _core.masked_whiten(values, mask, path)


def gae(
    token_level_rewards: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 1.0,
    *,
    path: TensorPath | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (verl's ``compute_gae_advantage_return``).

    Args:
        token_level_rewards: float ``[B, T]``.
        values: critic values ``[B, T]``.
        response_mask: ``[B, T]``, 1 on response tokens.
        gamma: discount in [0, 1].
        lam: GAE lambda in [0, 1].
        path: ``"cpu"`` or ``"device"`` to pick the implementation.

    Returns:
        ``(advantages, returns)``: advantages whitened over the mask; returns = raw advantages +
        values.

    Raises:
        ShapeError: Shapes that disagree, or an empty batch.
        ArgumentError: ``gamma``/``lam`` outside [0, 1], or fewer than two masked tokens.

    Example:
        >>> r = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
        >>> adv, ret = gae(r, torch.zeros(2, 3), torch.tensor([[1, 1, 1], [1, 1, 0]]))
        >>> ret
        tensor([[1., 1., 1.],
                [1., 1., 0.]])
    """
    with torch.no_grad():
        return _core.gae(token_level_rewards, values, response_mask, gamma, lam, path)


def reinforce_plus_plus(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    gamma: float = 1.0,
    *,
    path: TensorPath | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++: discounted returns, whitened over the batch, times the mask.

    Example:
        >>> r = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
        >>> reinforce_plus_plus(r, torch.ones(2, 2))[1]
        tensor([[1., 1.],
                [0., 0.]])
    """
    with torch.no_grad():
        return _core.reinforce_plus_plus(token_level_rewards, response_mask, gamma, path)


def grpo(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: GroupIds,
    norm_by_std: bool = True,
    epsilon: float = 1e-6,
    singleton: Singleton = "raw",
    *,
    path: TensorPath | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO outcome advantages: ``(s_i - mean_g) / (std_g + epsilon)`` over each group.

    ``s_i`` is the row's summed reward; ``std`` is unbiased. ``norm_by_std=False`` is Dr. GRPO
    (``s_i - mean_g``). A group of one uses mean 0 and std 1 (verl, ``singleton="raw"``) or gets
    0 (TRL, ``singleton="zero"``; TRL also uses ``epsilon=1e-4``). A constant group gives exactly 0
    (statistics in float64). The advantage fills both slots, times the mask.

    Args:
        token_level_rewards: float ``[B, T]``.
        response_mask: ``[B, T]``.
        group_ids: the prompt of each row: int tensor ``[B]``, numpy array or a sequence of
            hashables (verl's uid strings); groups need not be contiguous.
        norm_by_std: divide by the group's std.
        epsilon: added to the std.
        singleton: ``"raw"`` or ``"zero"``.
        path: ``"cpu"`` or ``"device"``.

    Example:
        >>> r = torch.tensor([[1.0], [0.0], [3.0]])
        >>> grpo(r, torch.ones(3, 1), [7, 7, 9], singleton="zero")[0].flatten()
        tensor([ 0.7071, -0.7071,  0.0000])
    """
    with torch.no_grad():
        return _core.grpo(
            token_level_rewards,
            response_mask,
            _group_tensor(group_ids),
            norm_by_std,
            epsilon,
            singleton,
            path,
        )


def rloo(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: GroupIds,
    singleton: Singleton = "raw",
    *,
    path: TensorPath | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RLOO: ``s_i`` minus the mean of the other samples of its group, ``n/(n-1) (s_i - mean_g)``.

    A group of one gives ``s_i`` (verl's loop version, ``singleton="raw"``) or 0 (verl's
    vectorised version, ``singleton="zero"``).

    Example:
        >>> r = torch.tensor([[1.0], [0.0], [2.0]])
        >>> rloo(r, torch.ones(3, 1), ["a", "a", "a"])[0].flatten()
        tensor([ 0.0000, -1.5000,  1.5000])
    """
    with torch.no_grad():
        return _core.rloo(
            token_level_rewards, response_mask, _group_tensor(group_ids), singleton, path
        )


def reinforce_plus_plus_baseline(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: GroupIds,
    *,
    path: TensorPath | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ with a group baseline: ``s_i - mean_g`` over the mask, whitened over the batch.

    A constant group does not give 0: the batch mean is subtracted by the whitening.

    Example:
        >>> r = torch.tensor([[1.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
        >>> adv, _ = reinforce_plus_plus_baseline(r, torch.ones(3, 2), [0, 0, 1])
        >>> adv.shape
        torch.Size([3, 2])
    """
    with torch.no_grad():
        return _core.outcome(
            "reinforce_plus_plus_baseline",
            token_level_rewards,
            response_mask,
            _group_tensor(group_ids),
            path,
        )


def opo(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: GroupIds,
    *,
    path: TensorPath | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """OPO: ``s_i`` minus the length-weighted mean score of its group.

    The baseline is ``sum_j L_j s_j / sum_j L_j`` (``L_j`` = response length); a group of one,
    or one whose rows are all empty, has baseline 0.

    Example:
        >>> r = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
        >>> m = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
        >>> opo(r, m, [0, 0])[0][:, 0]  # baseline (2*1 + 1*0) / 3
        tensor([ 0.3333, -0.6667])
    """
    with torch.no_grad():
        return _core.outcome(
            "opo", token_level_rewards, response_mask, _group_tensor(group_ids), path
        )


def gpg(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: GroupIds,
    *,
    path: TensorPath | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GPG: ``alpha (s_i - mean_g)`` with ``alpha = B / max(#nonzero scores, 1)``.

    Example:
        >>> r = torch.tensor([[1.0], [0.0], [0.0], [0.0]])
        >>> gpg(r, torch.ones(4, 1), [0, 0, 1, 1])[0].flatten()  # alpha = 4
        tensor([ 2., -2.,  0.,  0.])
    """
    with torch.no_grad():
        return _core.outcome(
            "gpg", token_level_rewards, response_mask, _group_tensor(group_ids), path
        )


def remax(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    reward_baselines: torch.Tensor,
    *,
    path: TensorPath | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ReMax: returns ``G`` = reverse cumulative sum of ``r * mask``; ``A = G - b_i * mask``.

    Args:
        token_level_rewards: float ``[B, T]``.
        response_mask: ``[B, T]``.
        reward_baselines: ``[B]``, the greedy rollout's reward per row.
        path: accepted for symmetry; one tch expression serves both paths.

    Example:
        >>> r = torch.tensor([[0.0, 1.0]])
        >>> remax(r, torch.ones(1, 2), torch.tensor([0.5]))
        (tensor([[0.5000, 0.5000]]), tensor([[1., 1.]]))
    """
    with torch.no_grad():
        return _core.remax(token_level_rewards, response_mask, reward_baselines, path)


def grpo_passk(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: GroupIds,
    norm_by_std: bool = True,
    epsilon: float = 1e-6,
    *,
    path: TensorPath | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pass@k GRPO: only each group's best sample gets ``r_max - r_second`` (over ``std + eps``).

    Every group needs at least two samples (:class:`~r1kit.errors.ArgumentError` otherwise).

    Example:
        >>> r = torch.tensor([[1.0], [0.0], [0.5], [2.0], [2.0]])
        >>> grpo_passk(r, torch.ones(5, 1), [0, 0, 0, 1, 1], norm_by_std=False)[0].flatten()
        tensor([0.5000, 0.0000, 0.0000, 0.0000, 0.0000])
    """
    with torch.no_grad():
        return _core.grpo_passk(
            token_level_rewards,
            response_mask,
            _group_tensor(group_ids),
            norm_by_std,
            epsilon,
            path,
        )


# --- KL -------------------------------------------------------------------------------------

KLKind = Literal[
    "kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3",
    "kl+", "k1+", "abs+", "mse+", "k2+", "low_var_kl+", "k3+",
]  # fmt: skip


def _requires_grad(*tensors: object) -> bool:
    return torch.is_grad_enabled() and any(getattr(t, "requires_grad", False) for t in tensors)


class _KLPenalty(torch.autograd.Function):
    """Rust forward and backward kernels for the CPU path of :func:`kl_penalty`."""

    @staticmethod
    def forward(
        ctx: Any, log_prob: torch.Tensor, ref_log_prob: torch.Tensor, kind: str
    ) -> torch.Tensor:
        ctx.save_for_backward(log_prob, ref_log_prob)
        ctx.kind = kind
        out: torch.Tensor = _core.kl_penalty(log_prob, ref_log_prob, kind, "cpu")
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        log_prob, ref_log_prob = ctx.saved_tensors
        g = _core.kl_penalty_backward(grad.contiguous(), log_prob, ref_log_prob, ctx.kind, "cpu")
        need_lp, need_ref = ctx.needs_input_grad[:2]
        return (g if need_lp else None, -g if need_ref else None, None)


def kl_penalty(
    log_prob: torch.Tensor,
    ref_log_prob: torch.Tensor,
    kind: KLKind,
    *,
    path: TensorPath | None = None,
) -> torch.Tensor:
    """Per-token KL estimate between the policy and the reference (verl's ``kl_penalty``).

    With ``d = log_prob - ref_log_prob``: ``"kl"``/``"k1"`` gives ``d``, ``"abs"`` ``|d|``,
    ``"mse"``/``"k2"`` ``d**2 / 2`` and ``"low_var_kl"``/``"k3"``
    ``clamp(exp(x) - x - 1, -10, 10)`` with ``x = clamp(-d, -20, 20)``. A ``"+"`` suffix keeps
    the value and takes the gradient of k2 (straight-through). Differentiable with respect to both
    inputs (the CPU path runs Rust forward and backward kernels; the device path is recorded by
    autograd). Any shape; bf16/fp16 are computed in float32.

    Raises:
        ArgumentError: an unknown ``kind`` (the message lists the valid ones).
        ShapeError / DeviceError / DtypeError: inputs that do not match.

    Example:
        >>> lp = torch.tensor([-1.0, -2.0]); ref = torch.tensor([-2.0, -2.0])
        >>> kl_penalty(lp, ref, "low_var_kl")  # exp(-1) + 1 - 1, 0
        tensor([0.3679, 0.0000])
    """
    if _requires_grad(log_prob, ref_log_prob) and _core._resolve_path(log_prob, path) == "cpu":
        out: torch.Tensor = _KLPenalty.apply(log_prob, ref_log_prob, kind)  # type: ignore[no-untyped-call]
        return out
    return _core.kl_penalty(log_prob, ref_log_prob, kind, path)


class FixedKLController:
    """A constant KL coefficient (``update`` does nothing).

    Example:
        >>> ctl = FixedKLController(0.05); ctl.update(1.0, 64); ctl.value
        0.05
    """

    def __init__(self, kl_coef: float) -> None:
        self.value = _finite(kl_coef, "kl_coef")

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op, for the controller interface."""


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019), as verl and TRL update it.

    ``e = clip(current_kl / target_kl - 1, -0.2, 0.2)``;
    ``value *= 1 + e * n_steps / horizon``.

    Example:
        >>> ctl = AdaptiveKLController(init_kl_coef=0.1, target_kl=0.5, horizon=100)
        >>> ctl.update(current_kl=1.0, n_steps=50); round(ctl.value, 6)  # e = 0.2: x 1.1
        0.11
    """

    def __init__(self, init_kl_coef: float, target_kl: float, horizon: float) -> None:
        self.value = _finite(init_kl_coef, "init_kl_coef")
        self.target = _finite(target_kl, "target_kl")
        self.horizon = _finite(horizon, "horizon")
        if self.target <= 0:
            raise ArgumentError(f"`target_kl`: expected a value > 0, got {target_kl}")
        if self.horizon <= 0:
            raise ArgumentError(f"`horizon`: expected a value > 0, got {horizon}")

    def update(self, current_kl: float, n_steps: int) -> None:
        """Moves the coefficient toward the target KL."""
        current_kl = _finite(current_kl, "current_kl")
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


KLController = FixedKLController | AdaptiveKLController


def _finite(value: object, arg: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ArgumentTypeError(f"`{arg}`: expected a real number, got {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out):
        raise ArgumentError(f"`{arg}`: expected a finite number, got {out}")
    return out


def apply_kl_penalty(
    token_level_scores: torch.Tensor,
    old_log_prob: torch.Tensor,
    ref_log_prob: torch.Tensor,
    response_mask: torch.Tensor,
    kind: KLKind = "kl",
    beta: float | KLController = 0.001,
    *,
    path: TensorPath | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """KL in the reward: ``scores - beta * kl(old, ref) * mask`` (verl's ``apply_kl_penalty``).

    Args:
        token_level_scores: float ``[B, T]``.
        old_log_prob, ref_log_prob: ``[B, T]`` log-probs of the rollout and reference policies.
        response_mask: ``[B, T]``.
        kind: the KL estimator (see :func:`kl_penalty`).
        beta: the coefficient, or a controller: its ``value`` is used and then updated with the
            batch's KL and ``n_steps = B``, as verl does.

    Returns:
        ``(token_level_rewards, metrics)``; metrics hold ``"actor/reward_kl_penalty"`` (mean over
        rows of each row's masked mean KL) and ``"actor/reward_kl_penalty_coeff"`` (beta used).

    Example:
        >>> s = torch.tensor([[0.0, 1.0]]); old = torch.tensor([[-1.0, -1.0]])
        >>> rewards, m = apply_kl_penalty(s, old, old - 0.5, torch.ones(1, 2), "kl", 0.1)
        >>> rewards, m["actor/reward_kl_penalty"]
        (tensor([[-0.0500,  0.9500]]), 0.5)
    """
    controller = beta if isinstance(beta, (FixedKLController, AdaptiveKLController)) else None
    coef = controller.value if controller is not None else _finite(beta, "beta")
    with torch.no_grad():
        rewards, current = _core.apply_kl_penalty(
            token_level_scores, old_log_prob, ref_log_prob, response_mask, kind, coef, path
        )
    if controller is not None:
        controller.update(current, int(token_level_scores.shape[0]))
    metrics = {"actor/reward_kl_penalty": current, "actor/reward_kl_penalty_coeff": coef}
    return rewards, metrics


# --- policy losses and aggregation -------------------------------------------------------------

PolicyLossKind = Literal["vanilla", "gspo", "gpg", "cispo"]
AggMode = Literal[
    "token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean",
    "seq-mean-token-sum-norm",
]  # fmt: skip


class _Holder:
    """Carries the metrics out of an autograd function's forward."""

    metrics: tuple[float, float, float] = (0.0, 0.0, 0.0)


class _PolicyLoss(torch.autograd.Function):
    """Rust forward and backward kernels for the CPU path of :func:`policy_loss`."""

    @staticmethod
    def forward(
        ctx: Any,
        log_prob: torch.Tensor,
        old_log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        params: tuple[Any, ...],
        holder: _Holder,
    ) -> torch.Tensor:
        kind, low, high, c, agg, lsf = params
        loss, metrics, coef, seq = _core.policy_loss(
            kind, old_log_prob, log_prob, advantages, response_mask, low, high, c, agg, lsf, "cpu"
        )
        holder.metrics = metrics
        ctx.save_for_backward(old_log_prob, log_prob, advantages, response_mask, coef, seq)
        ctx.params = params
        out: torch.Tensor = loss
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        old, lp, adv, mask, coef, seq = ctx.saved_tensors
        kind, low, high, c, agg, lsf = ctx.params
        g = _core.policy_loss_backward(
            kind, float(grad), old, lp, adv, mask, low, high, c, agg, lsf, coef, seq
        )
        return (g, None, None, None, None, None)


_METRIC_KEYS = ("actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower")


def policy_loss(
    kind: PolicyLossKind,
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    clip_ratio_c: float = 3.0,
    agg: AggMode = "token-mean",
    *,
    loss_scale_factor: float | None = None,
    path: TensorPath | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """A policy-gradient loss and verl's metrics (``compute_policy_loss_<kind>`` + ``agg_loss``).

    With ``r = exp(clamp(log_prob - old_log_prob, -20, 20))``:

    - ``"vanilla"``: PPO clip ``max(-A r, -A clip(r, 1 - low, 1 + high))``; where ``A < 0`` also
      capped at ``-A * clip_ratio_c`` (dual clip).
    - ``"gspo"``: the same clip on the sequence ratio ``exp(mean_t(log_prob - old))`` (token
      gradients, no dual clip).
    - ``"gpg"``: ``-log_prob * A``.
    - ``"cispo"``: ``-sg(clip(r, 1 - low, 1 + high)) * A * log_prob``.

    The loss is differentiable with respect to ``log_prob``. On the CPU path a fused Rust kernel
    computes the value and another the gradient; when ``old_log_prob`` or ``advantages`` also
    require grad, or on the device path, the tch composition is recorded by autograd instead.

    Args:
        kind: one of ``"vanilla"``, ``"gspo"``, ``"gpg"``, ``"cispo"``.
        old_log_prob, log_prob, advantages, response_mask: ``[B, T]``.
        clip_ratio_low, clip_ratio_high: the clip range ``[1 - low, 1 + high]``.
        clip_ratio_c: the dual-clip bound (> 1).
        agg: the aggregation mode (see :func:`agg_loss`).
        loss_scale_factor: for ``"seq-mean-token-sum-norm"`` (default T).

    Returns:
        ``(loss, metrics)``: a 0-d tensor and verl's metric dict (floats; empty for ``"gpg"``).

    Example:
        >>> lp = torch.tensor([[0.5, 0.0]], requires_grad=True)
        >>> loss, m = policy_loss("vanilla", torch.zeros(1, 2), lp, torch.ones(1, 2),
        ...                       torch.ones(1, 2))
        >>> loss.backward(); loss, lp.grad, m["actor/pg_clipfrac"]
        (tensor(-1.1000, grad_fn=<_PolicyLossBackward>), tensor([[ 0.0000, -0.5000]]), 0.5)
    """
    params = (kind, clip_ratio_low, clip_ratio_high, clip_ratio_c, agg, loss_scale_factor)
    fused = not _requires_grad(old_log_prob, advantages, response_mask)
    if fused and _requires_grad(log_prob) and _core._resolve_path(log_prob, path) == "cpu":
        holder = _Holder()
        loss: torch.Tensor = _PolicyLoss.apply(  # type: ignore[no-untyped-call]
            log_prob, old_log_prob, advantages, response_mask, params, holder
        )
        metrics = holder.metrics
    else:
        if not fused:
            path = "device"
        loss, metrics, _, _ = _core.policy_loss(
            kind, old_log_prob, log_prob, advantages, response_mask, *params[1:], path
        )
    if kind == "gpg":
        return loss, {}
    return loss, dict(zip(_METRIC_KEYS, metrics, strict=True))


class _AggLoss(torch.autograd.Function):
    """Rust forward and backward kernels for the CPU path of :func:`agg_loss`."""

    @staticmethod
    def forward(
        ctx: Any,
        loss_mat: torch.Tensor,
        loss_mask: torch.Tensor,
        mode: str,
        loss_scale_factor: float | None,
    ) -> torch.Tensor:
        value, coef = _core.agg_loss(loss_mat, loss_mask, mode, loss_scale_factor, "cpu")
        ctx.save_for_backward(loss_mat, loss_mask, coef)
        out: torch.Tensor = value
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        loss_mat, loss_mask, coef = ctx.saved_tensors
        g = _core.agg_loss_backward(float(grad), loss_mat, loss_mask, coef)
        return (g, None, None, None)


def agg_loss(
    loss_mat: torch.Tensor,
    loss_mask: torch.Tensor,
    mode: AggMode = "token-mean",
    loss_scale_factor: float | None = None,
    *,
    path: TensorPath | None = None,
) -> torch.Tensor:
    """A ``[B, T]`` loss matrix to a scalar, as verl's ``agg_loss`` (single process).

    ``N_s`` = rows with any mask:

    - ``"token-mean"``: ``sum(L*m) / sum(m)``
    - ``"token-sum"``: ``sum(L*m)``
    - ``"seq-mean-token-sum"``: ``sum_i(sum_t L*m) / N_s``
    - ``"seq-mean-token-mean"``: ``sum_i[sum_t L*m / (sum_t m + 1e-8)] / N_s``
    - ``"seq-mean-token-sum-norm"``: ``sum_i(sum_t L*m) / N_s / loss_scale_factor`` (default T)

    NaN or inf under mask 0 never leaks. Differentiable with respect to ``loss_mat``.

    Example:
        >>> L = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
        >>> m = torch.tensor([[1, 1, 1], [1, 0, 0]])
        >>> agg_loss(L, m, "token-mean"), agg_loss(L, m, "seq-mean-token-mean")
        (tensor(2.5000), tensor(3.))
    """
    if (
        _requires_grad(loss_mat)
        and not _requires_grad(loss_mask)
        and _core._resolve_path(loss_mat, path) == "cpu"
    ):
        out: torch.Tensor = _AggLoss.apply(  # type: ignore[no-untyped-call]
            loss_mat, loss_mask, mode, loss_scale_factor
        )
        return out
    if _requires_grad(loss_mask):
        path = "device"
    value, _ = _core.agg_loss(loss_mat, loss_mask, mode, loss_scale_factor, path)
    result: torch.Tensor = value
    return result


def entropy_from_logits(logits: torch.Tensor, *, path: TensorPath | None = None) -> torch.Tensor:
    """Entropy of ``softmax(logits)`` over the last dimension: ``logsumexp(l) - sum(p * l)``.

    Differentiable (recorded by autograd). Classes with probability 0 (logits of ``-inf``)
    contribute 0 where verl's formula gives NaN.

    Example:
        >>> entropy_from_logits(torch.tensor([[0.0, 0.0], [0.0, float("-inf")]]))
        tensor([0.6931, 0.0000])
    """
    out: torch.Tensor = _core.entropy_from_logits(logits, path)
    return out
