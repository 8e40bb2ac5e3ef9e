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

from collections.abc import Hashable, Sequence
from typing import Any, Literal

import numpy as np
import torch

from r1kit import _core
from r1kit.errors import ArgumentTypeError, ShapeError

__all__ = [
    "GroupIds",
    "gae",
    "gpg",
    "grpo",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "opo",
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
    dense: dict[Hashable, int] = {}
    try:
        ids = [dense.setdefault(g, len(dense)) for g in group_ids]
    except TypeError as e:
        raise ArgumentTypeError(f"`group_ids`: expected hashable ids ({e})") from None
    return torch.tensor(ids, dtype=torch.int64)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum(values * mask) / (sum(mask) + 1e-8)`` over all elements; NaN under mask 0 is ignored.

    Example:
        >>> masked_mean(torch.tensor([1.0, 3.0, float("nan")]), torch.tensor([1, 1, 0]))
        tensor(2.)
    """
    return _core.masked_mean(values, mask)


def masked_var(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of ``values`` over ``mask`` (needs sum(mask) > 1).

    Example:
        >>> masked_var(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([1, 1, 0]))
        tensor(2.)
    """
    return _core.masked_var(values, mask)


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
