"""r1kit inside verl 0.9.1: advantage estimators, policy losses and reward scoring.

Installing r1kit registers a ``verl.plugins`` entry point, so ``import verl`` (in the driver and in
every Ray worker) calls :func:`register` and these names become valid in verl's config:

- ``algorithm.adv_estimator``: ``r1kit_grpo``, ``r1kit_grpo_passk``, ``r1kit_rloo``,
  ``r1kit_rloo_vectorized``, ``r1kit_reinforce_plus_plus``, ``r1kit_reinforce_plus_plus_baseline``,
  ``r1kit_remax``, ``r1kit_opo``, ``r1kit_gpg`` and ``r1kit_gae`` (see :func:`patch_core_algos`
  for GAE: verl's generic estimator path does not pass the critic's values);
- ``actor_rollout_ref.actor.policy_loss.loss_mode``: ``r1kit_vanilla``, ``r1kit_gspo``,
  ``r1kit_gpg``, ``r1kit_cispo``.

Each computes the same numbers as its verl twin (to float32 rounding) and takes verl's keyword
arguments (``token_level_rewards``, ``response_mask``, ``index``, ``config``, ...).

Example:
    >>> from r1kit.integrations import verl as r1kit_verl
    >>> sorted(r1kit_verl.ESTIMATORS)[:3]
    ['r1kit_gae', 'r1kit_gpg', 'r1kit_grpo']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from r1kit import rl
from r1kit.errors import ArgumentError

__all__ = [
    "ESTIMATORS",
    "POLICY_LOSSES",
    "compute_score",
    "compute_score_batch",
    "patch_core_algos",
    "register",
]


def _cfg(config: Any, key: str, default: Any) -> Any:
    """``config.key`` for verl's AlgoConfig / ActorConfig / DictConfig / dict, else ``default``."""
    if config is None:
        return default
    if isinstance(config, dict):
        return config.get(key, default)
    getter = getattr(config, "get", None)
    if callable(getter):
        value = getter(key, default)
        return default if value is None else value
    value = getattr(config, key, default)
    return default if value is None else value


def _index(index: Any) -> Any:
    if index is None:
        raise ArgumentError(
            "`index`: expected verl's uid array (data.non_tensor_batch['uid']) for a group "
            "estimator"
        )
    return index


# --- advantage estimators (verl's keyword names) ---------------------------------------------


def _grpo(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool | None = None,
    config: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    norm = (
        norm_adv_by_std_in_grpo
        if norm_adv_by_std_in_grpo is not None
        else bool(_cfg(config, "norm_adv_by_std_in_grpo", True))
    )
    return rl.grpo(token_level_rewards, response_mask, _index(index), norm, epsilon)


def _grpo_passk(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    epsilon: float = 1e-6,
    config: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    norm = bool(_cfg(config, "norm_adv_by_std_in_grpo", True))
    return rl.grpo_passk(token_level_rewards, response_mask, _index(index), norm, epsilon)


def _rloo(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    config: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    return rl.rloo(token_level_rewards, response_mask, _index(index), "raw")


def _rloo_vectorized(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    config: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    return rl.rloo(token_level_rewards, response_mask, _index(index), "zero")


def _reinforce_plus_plus(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    config: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    return rl.reinforce_plus_plus(
        token_level_rewards, response_mask, float(_cfg(config, "gamma", 1.0))
    )


def _reinforce_plus_plus_baseline(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    config: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    return rl.reinforce_plus_plus_baseline(token_level_rewards, response_mask, _index(index))


def _remax(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    reward_baselines: torch.Tensor | None = None,
    config: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    if reward_baselines is None:
        raise ArgumentError(
            "`reward_baselines`: expected the greedy rollout's rewards (verl's ReMax trainer puts "
            "them in data.batch['reward_baselines'])"
        )
    return rl.remax(token_level_rewards, response_mask, reward_baselines)


def _opo(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    config: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    return rl.opo(token_level_rewards, response_mask, _index(index))


def _gpg(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    config: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    return rl.gpg(token_level_rewards, response_mask, _index(index))


def _gae(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    values: torch.Tensor | None = None,
    gamma: float | None = None,
    lam: float | None = None,
    config: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    if values is None:
        raise ArgumentError(
            "`values`: verl's generic estimator path does not pass the critic's values; keep "
            "algorithm.adv_estimator=gae and call r1kit.integrations.verl.patch_core_algos() "
            "to run r1kit's GAE there"
        )
    g = gamma if gamma is not None else float(_cfg(config, "gamma", 1.0))
    lam_ = lam if lam is not None else float(_cfg(config, "lam", 1.0))
    return rl.gae(token_level_rewards, values, response_mask, g, lam_)


ESTIMATORS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    "r1kit_gae": _gae,
    "r1kit_grpo": _grpo,
    "r1kit_grpo_passk": _grpo_passk,
    "r1kit_rloo": _rloo,
    "r1kit_rloo_vectorized": _rloo_vectorized,
    "r1kit_reinforce_plus_plus": _reinforce_plus_plus,
    "r1kit_reinforce_plus_plus_baseline": _reinforce_plus_plus_baseline,
    "r1kit_remax": _remax,
    "r1kit_opo": _opo,
    "r1kit_gpg": _gpg,
}


# --- policy losses -----------------------------------------------------------------------------


def _global_scale(mask: torch.Tensor, mode: str, info: dict[str, Any]) -> float:
    """verl's data-parallel normalisation (``config.global_batch_info``) relative to the local
    aggregation r1kit computes: 1.0 for a single process."""
    dp = int(info.get("dp_size", 1) or 1)
    if mode == "token-mean":
        tokens = info.get("batch_num_tokens")
        if tokens is None:
            if dp > 1:
                raise ArgumentError("`batch_num_tokens`: required when dp_size > 1 (token-mean)")
            return 1.0
        return float(mask.sum().item()) / float(tokens) * dp
    if mode == "token-sum":
        return float(dp)
    seqs = info.get("global_batch_size")
    if seqs is None:
        if dp > 1:
            raise ArgumentError("`global_batch_size`: required when dp_size > 1 (seq-mean modes)")
        return 1.0
    local = float((mask.sum(dim=-1) > 0).sum().item())
    return local / float(seqs) * dp


def _policy_loss(kind: str) -> Callable[..., tuple[torch.Tensor, dict[str, Any]]]:
    def loss_fn(
        old_log_prob: torch.Tensor,
        log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        loss_agg_mode: str = "token-mean",
        config: Any = None,
        rollout_is_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        if rollout_is_weights is not None:
            # Per-token importance weights are outside r1kit's fused kernels: verl's own loss.
            from verl.trainer.ppo import core_algos

            fn = core_algos.get_policy_loss_fn(kind)  # type: ignore[no-untyped-call]
            out: tuple[torch.Tensor, dict[str, Any]] = fn(
                old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
                rollout_is_weights,
            )  # fmt: skip
            return out
        clip = float(_cfg(config, "clip_ratio", 0.2))
        low = float(_cfg(config, "clip_ratio_low", clip))
        high = float(_cfg(config, "clip_ratio_high", clip))
        c = float(_cfg(config, "clip_ratio_c", 3.0))
        lsf = _cfg(config, "loss_scale_factor", None)
        loss, metrics = rl.policy_loss(
            kind,  # type: ignore[arg-type]
            old_log_prob, log_prob, advantages, response_mask, low, high, c,
            loss_agg_mode,  # type: ignore[arg-type]
            loss_scale_factor=lsf,
        )  # fmt: skip
        info = _cfg(config, "global_batch_info", None) or {}
        scale = _global_scale(response_mask, loss_agg_mode, dict(info))
        if scale != 1.0:
            loss = loss * scale
        return loss, metrics

    loss_fn.__name__ = f"r1kit_{kind}"
    loss_fn.__doc__ = f"r1kit's {kind!r} policy loss with verl's signature."
    return loss_fn


POLICY_LOSSES: dict[str, Callable[..., tuple[torch.Tensor, dict[str, Any]]]] = {
    f"r1kit_{kind}": _policy_loss(kind) for kind in ("vanilla", "gspo", "gpg", "cispo")
}


def register() -> None:
    """Registers :data:`ESTIMATORS` and :data:`POLICY_LOSSES` in verl's registries (idempotent).

    The ``verl.plugins`` entry point calls this when verl is imported.
    """
    from verl.trainer.ppo import core_algos

    for name, fn in ESTIMATORS.items():
        if core_algos.ADV_ESTIMATOR_REGISTRY.get(name) is not fn:
            core_algos.register_adv_est(name)(fn)
    for name, loss in POLICY_LOSSES.items():
        core_algos.register_policy_loss(name)(loss)


def _gae_return(
    token_level_rewards: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    gamma: float | torch.Tensor,
    lam: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    return rl.gae(token_level_rewards, values, response_mask, float(gamma), float(lam))


def patch_core_algos() -> None:
    """Makes verl's built-in ``gae`` and ``grpo`` paths run r1kit.

    verl's trainer calls ``core_algos.compute_gae_advantage_return`` and
    ``core_algos.compute_grpo_outcome_advantage`` directly for ``adv_estimator=gae`` / ``grpo``
    (not through the registry), so these two are replaced in place. Call it in the driver process
    (``compute_advantage`` runs there).
    """
    from verl.trainer.ppo import core_algos

    core_algos.compute_gae_advantage_return = _gae_return
    core_algos.compute_grpo_outcome_advantage = _grpo


# --- reward scoring ----------------------------------------------------------------------------

_QA_SOURCES = ("nq", "triviaqa", "popqa", "hotpotqa", "2wiki", "musique", "bamboogle", "searchr1",
               "zerosearch", "squad", "webq", "qa")  # fmt: skip
_MATH_SOURCES = ("gsm8k", "math", "aime", "amc", "deepscaler", "olympiad", "minerva", "numina",
                 "parallel", "dapo")  # fmt: skip
_TASKS = ("qa", "math", "parallel_r1")


def _task(data_source: str, extra_info: dict[str, Any]) -> str:
    task = extra_info.get("r1kit_task")
    if task is not None:
        if task not in _TASKS:
            raise ArgumentError(
                f"`extra_info['r1kit_task']`: expected one of {_TASKS}, got {task!r}"
            )
        return str(task)
    source = str(data_source).lower()
    if any(k in source for k in _MATH_SOURCES):
        return "math"
    if any(k in source for k in _QA_SOURCES):
        return "qa"
    raise ArgumentError(
        f"`data_source`: no r1kit task for {data_source!r}; set extra_info['r1kit_task'] to one "
        f"of {_TASKS}"
    )


def _golds(ground_truth: Any) -> str | list[str]:
    """verl's ground truth: a str, a list, or Search-R1's ``{"target": [...]}``."""
    if isinstance(ground_truth, dict):
        ground_truth = ground_truth.get("target", ground_truth.get("answer"))
    if isinstance(ground_truth, str):
        return ground_truth
    try:
        return [str(g) for g in ground_truth]
    except TypeError:
        raise ArgumentError(
            "`ground_truth`: expected a str, a list of str or {'target': [...]}, got "
            f"{type(ground_truth).__name__}"
        ) from None


def _step(extra_info: dict[str, Any]) -> int:
    for key in ("step", "global_step", "training_step"):
        if extra_info.get(key) is not None:
            return int(extra_info[key])
    raise ArgumentError(
        "`extra_info`: the Parallel-R1 recipes need the training step in extra_info['step']"
    )


def compute_score_batch(
    data_sources: list[Any],
    solution_strs: list[str],
    ground_truths: list[Any],
    extra_infos: list[dict[str, Any] | None] | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """:func:`compute_score` for a whole batch (verl's ``batch`` reward manager calls this): each
    task's rows are scored in one Rust call."""
    from r1kit import rewards

    n = len(solution_strs)
    infos: list[dict[str, Any]] = [dict(e or {}) for e in (extra_infos or [None] * n)]
    if not (len(data_sources) == len(ground_truths) == len(infos) == n):
        raise ArgumentError(
            "`solution_strs`: expected as many data_sources, ground_truths and extra_infos as "
            f"solutions ({n}), got {len(data_sources)}, {len(ground_truths)}, {len(infos)}"
        )
    tasks = [_task(d, e) for d, e in zip(data_sources, infos, strict=True)]
    golds = [_golds(g) for g in ground_truths]
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for task in _TASKS:
        rows = [i for i, t in enumerate(tasks) if t == task]
        if not rows:
            continue
        texts = [solution_strs[i] for i in rows]
        gold = [golds[i] for i in rows]
        if task == "qa":
            f1 = rewards.qa_scores(texts, gold, "f1").tolist()
            em = rewards.qa_scores(texts, gold, "em").tolist()
            answers = rewards.extract_answer(texts)
            for i, a, b, ans in zip(rows, f1, em, answers, strict=True):
                out[i] = {"score": a, "f1": a, "em": b, "pred": ans or ""}
        elif task == "math":
            acc = rewards.math_scores(texts, gold).tolist()
            preds = rewards.extract_math_answer(texts)
            for i, a, pred in zip(rows, acc, preds, strict=True):
                out[i] = {"score": a, "acc": a == 1.0, "pred": pred or ""}
        else:
            for i in rows:  # the step (and so the recipe's phase) can differ per row
                info = infos[i]
                reward = rewards.ParallelR1Reward(
                    info.get("r1kit_recipe", "alternating"),
                    int(info.get("r1kit_window", 10)),
                    int(info.get("r1kit_acc_steps", 8)),
                    float(info.get("r1kit_bonus", 1.2)),
                )
                value = reward([solution_strs[i]], [golds[i]], _step(info)).item()
                fmt = rewards.parallel_format([solution_strs[i]])
                correct = rewards.math_scores([solution_strs[i]], [golds[i]]).item() == 1.0
                out[i] = {
                    "score": value,
                    "acc": correct,
                    "parallel": bool(fmt.uses_parallel[0]),
                    "format_valid": bool(fmt.valid[0]),
                }
    return out


def compute_score(
    data_source: Any,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """verl's ``custom_reward_function`` interface, backed by :mod:`r1kit.rewards`.

    The task comes from ``extra_info["r1kit_task"]`` (``"qa"``, ``"math"``, ``"parallel_r1"``) or
    is recognised from ``data_source`` (nq, hotpotqa, ... give QA F1; gsm8k, math, aime, ... give
    math accuracy). Parallel-R1 reads the step from ``extra_info["step"]`` and the recipe from
    ``extra_info["r1kit_recipe"]`` (default ``"alternating"``).

    verl decodes responses with ``skip_special_tokens=True``: if the ``<Parallel>`` tags are
    special tokens they are gone from ``solution_str``. Either add them as ordinary (non-special)
    added tokens, or put the response token ids in ``extra_info`` and score them with
    :func:`r1kit.rewards.parallel_format` (``ids=``).

    Returns:
        ``{"score": float, ...}`` with ``f1``/``em``/``pred`` (QA), ``acc``/``pred`` (math) or
        ``acc``/``parallel``/``format_valid`` (Parallel-R1).

    Config (verl 0.9.1)::

        custom_reward_function.path=<site-packages>/r1kit/integrations/verl.py
        custom_reward_function.name=compute_score

    Example:
        >>> compute_score("nq", "<answer>Paris</answer>", {"target": ["Paris"]})["score"]
        1.0
    """
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info])[0]
