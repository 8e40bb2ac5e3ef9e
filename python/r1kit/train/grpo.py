"""GRPO for Hugging Face causal LMs: G samples per prompt, r1kit rewards, advantages and losses.

One step: sample ``group_size`` responses for each of ``prompts_per_step`` prompts under the
training layout (:func:`r1kit.train.core.sample`), score them (:class:`r1kit.rewards.
ParallelR1Reward` by default), turn the scores into advantages with an :mod:`r1kit.rl`
estimator, and minimise :func:`r1kit.rl.policy_loss` (PPO clip) plus an optional
:func:`r1kit.rl.kl_penalty` to a frozen reference, with AdamW and gradient clipping.

Example:
    >>> from r1kit.train.model import build_tokenizer, tiny_model
    >>> from r1kit.train.data import easy_arithmetic
    >>> tok = build_tokenizer(); model = tiny_model(len(tok), hidden_size=32, num_layers=1)
    >>> cfg = GRPOConfig(steps=1, prompts_per_step=2, group_size=2, max_new_tokens=4,
    ...                  progress=False)
    >>> rows = grpo_train(model, tok, easy_arithmetic(4), cfg)
    >>> sorted(k for k in rows[0] if k in ("reward", "accuracy", "parallel_ratio", "kl"))
    ['accuracy', 'kl', 'parallel_ratio', 'reward']
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from r1kit import rl
from r1kit.errors import ArgumentError
from r1kit.rewards import ParallelR1Reward
from r1kit.structure import ParallelTags
from r1kit.train.core import (
    MetricsLog,
    Rollout,
    epoch_batches,
    frozen_copy,
    progress_bar,
    response_stats,
    sample,
    sequence_log_probs,
)
from r1kit.train.data import Example

__all__ = ["ESTIMATORS", "GRPOConfig", "RewardFn", "grpo_train", "grpo_update"]

RewardFn = Callable[[Sequence[str], Sequence[str], int], torch.Tensor]
"""``(responses, golds, step) -> float32 [N]`` rewards."""

ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "grpo": lambda r, m, g: rl.grpo(r, m, g)[0],
    "reinforce_plus_plus": lambda r, m, g: rl.reinforce_plus_plus(r, m)[0],
    "dr_grpo": lambda r, m, g: rl.grpo(r, m, g, norm_by_std=False)[0],
    "rloo": lambda r, m, g: rl.rloo(r, m, g)[0],
    "reinforce_plus_plus_baseline": lambda r, m, g: rl.reinforce_plus_plus_baseline(r, m, g)[0],
    "opo": lambda r, m, g: rl.opo(r, m, g)[0],
    "gpg": lambda r, m, g: rl.gpg(r, m, g)[0],
    "grpo_passk": lambda r, m, g: rl.grpo_passk(r, m, g)[0],
}
"""Outcome-advantage estimators by name (all from :mod:`r1kit.rl`; ``reinforce_plus_plus``
whitens over the whole batch and ignores the groups). :func:`r1kit.rl.gae` needs a critic's
values and :func:`r1kit.rl.remax` a greedy rollout's reward per prompt, which this critic-free
loop does not produce."""


@dataclass
class GRPOConfig:
    """Settings of :func:`grpo_train`.

    Attributes:
        steps: Training steps (one rollout batch each).
        prompts_per_step: Distinct prompts per step.
        group_size: Samples per prompt (G).
        max_new_tokens: Response length cap.
        temperature: Sampling temperature.
        lr: AdamW learning rate.
        max_grad_norm: Gradient-norm clip.
        clip_ratio: PPO clip range ``[1 - clip_ratio, 1 + clip_ratio]``.
        updates_per_batch: Optimizer steps on each rollout batch (1 = on-policy).
        kl_coef: Weight of the KL penalty to the frozen reference (0: no reference model).
        kl_kind: The :func:`r1kit.rl.kl_penalty` estimator.
        estimator: A key of :data:`ESTIMATORS`.
        reward: A :class:`r1kit.rewards.ParallelR1Reward` recipe (``accuracy``, ``gsm8k_stage``,
            ``alternating``), used when :func:`grpo_train` gets no ``reward_fn``.
        structured: Structured (Unseen) layout for sampling and training; False: causal (Seen).
        seed: Seed of the prompt order and the sampling.
        progress: Show a tqdm bar.
    """

    steps: int = 50
    prompts_per_step: int = 8
    group_size: int = 8
    max_new_tokens: int = 64
    temperature: float = 1.0
    lr: float = 3e-4
    max_grad_norm: float = 1.0
    clip_ratio: float = 0.2
    updates_per_batch: int = 1
    kl_coef: float = 0.0
    kl_kind: str = "low_var_kl"
    estimator: str = "grpo"
    reward: str = "accuracy"
    structured: bool = True
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "prompts_per_step", "group_size", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ArgumentError(f"`{name}`: expected a positive int, got {value!r}")
        if self.updates_per_batch < 1:
            raise ArgumentError(
                f"`updates_per_batch`: expected a positive int, got {self.updates_per_batch!r}"
            )
        if self.estimator not in ESTIMATORS:
            raise ArgumentError(
                f"`estimator`: expected one of {sorted(ESTIMATORS)}, got {self.estimator!r}"
            )
        if self.kl_coef < 0:
            raise ArgumentError(f"`kl_coef`: expected a value >= 0, got {self.kl_coef!r}")


def grpo_update(
    model: Any,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    tags: ParallelTags,
    config: GRPOConfig,
    ref_model: Any | None = None,
) -> dict[str, float]:
    """Policy-gradient update(s) on one scored rollout batch.

    The sequence reward sits on each response's last token; the estimator spreads the advantage
    over the response. Tokens the sampler forced (:attr:`Rollout.forced`) carry no loss.
    ``old_log_prob`` is the policy before the first update (so the first update is on-policy and
    the clip only acts from the second).

    Args:
        model: The policy (trained in place).
        optimizer: Its optimizer.
        rollout: Responses from :func:`r1kit.train.core.sample`.
        rewards: float ``[N]``, one per response.
        group_ids: int ``[N]``: which prompt each response answers.
        tags: The tag ids.
        config: The settings (clip, KL, estimator, layout, updates).
        ref_model: The frozen reference for the KL penalty (needed when ``kl_coef > 0``).

    Returns:
        ``loss``, ``kl``, ``pg_clipfrac``, ``grad_norm`` and ``advantage_abs`` (mean over tokens).

    Raises:
        ArgumentError: If ``kl_coef > 0`` without a reference model.
        ShapeError: If ``rewards`` or ``group_ids`` do not have one entry per response.
    """
    if config.kl_coef > 0 and ref_model is None:
        raise ArgumentError("`ref_model`: required when kl_coef > 0, got None")
    p = rollout.prompt_len
    mask = rollout.loss_mask
    ids, attn = rollout.input_ids, rollout.attention_mask
    last = (rollout.response_mask.sum(1).long() - 1).clamp(min=0)
    token_rewards = torch.zeros_like(mask)
    token_rewards[torch.arange(mask.shape[0]), last] = rewards.float()
    advantages = ESTIMATORS[config.estimator](token_rewards, mask, group_ids)
    model.train()
    with torch.no_grad():
        # With one update, the old policy is the first forward's own values: one pass fewer.
        old = None
        if config.updates_per_batch > 1:
            old = sequence_log_probs(model, ids, attn, p, tags, config.structured)[:, p:]
        ref = None
        if ref_model is not None and config.kl_coef > 0:
            ref = sequence_log_probs(ref_model, ids, attn, p, tags, config.structured)[:, p:]
    out: dict[str, float] = {}
    for _ in range(config.updates_per_batch):
        lp = sequence_log_probs(model, ids, attn, p, tags, config.structured)[:, p:]
        if old is None:
            old = lp.detach()
        loss, metrics = rl.policy_loss(
            "vanilla",
            old,
            lp,
            advantages,
            mask,
            clip_ratio_low=config.clip_ratio,
            clip_ratio_high=config.clip_ratio,
        )
        kl = torch.zeros(())
        if ref is not None:
            kl = rl.masked_mean(rl.kl_penalty(lp, ref, config.kl_kind), mask)  # type: ignore[arg-type]
            loss = loss + config.kl_coef * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        out = {
            "loss": loss.item(),
            "kl": kl.item(),
            "pg_clipfrac": float(metrics.get("actor/pg_clipfrac", 0.0)),
            "grad_norm": float(norm),
            "advantage_abs": float((advantages.abs() * mask).sum() / mask.sum().clamp(min=1)),
        }
    return out


def grpo_train(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    config: GRPOConfig,
    log: MetricsLog | None = None,
    stage: str = "grpo",
    tags: ParallelTags | None = None,
    reward_fn: RewardFn | None = None,
    step_offset: int = 0,
) -> list[dict[str, Any]]:
    """Trains ``model`` in place with GRPO on prompts with gold answers.

    Args:
        model: A ``transformers`` causal LM (the policy).
        tokenizer: Its tokenizer (tags as single tokens).
        examples: Prompts and gold answers (``response`` unused).
        config: The settings.
        log: Where each step's metrics go.
        stage: The ``stage`` field of the metric rows.
        tags: The tag ids (default: looked up in ``tokenizer``).
        reward_fn: ``(responses, golds, step) -> [N]``; default
            ``ParallelR1Reward(config.reward)``.
        step_offset: Added to the step number the reward sees (recipes that continue a count).

    Returns:
        One metrics dict per step: ``loss``, ``reward``, ``accuracy``, ``parallel_ratio``,
        ``block_position``, ``kl``, ``response_tokens``, ``tokens_per_s``, ...

    Raises:
        ArgumentError: If there are no examples, or a bad reward recipe.
    """
    if not examples:
        raise ArgumentError("`examples`: expected at least one example, got none")
    tags = tags or ParallelTags.from_tokenizer(tokenizer)
    if reward_fn is None:
        recipe = ParallelR1Reward(config.reward)  # type: ignore[arg-type]

        def reward_fn(texts: Sequence[str], golds: Sequence[str], step: int) -> torch.Tensor:
            return recipe(list(texts), list(golds), step)

    ref_model = None
    if config.kl_coef > 0:
        ref_model = frozen_copy(model)
    rng = random.Random(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    batches = epoch_batches(len(examples), config.prompts_per_step, rng)
    rows = []
    bar = progress_bar(config.steps, stage, config.progress)
    for step in bar:
        picked = next(batches)
        chosen = [examples[i] for i in picked for _ in range(config.group_size)]
        golds = [e.answer for e in chosen]
        t0 = time.perf_counter()
        rollout = sample(
            model,
            tokenizer,
            [e.prompt for e in chosen],
            tags,
            config.max_new_tokens,
            temperature=config.temperature,
            structured=config.structured,
            generator=gen,
        )
        scores = reward_fn(rollout.texts, golds, step + step_offset)
        groups = torch.arange(len(picked)).repeat_interleave(config.group_size)
        update = grpo_update(model, opt, rollout, scores, groups, tags, config, ref_model)
        elapsed = time.perf_counter() - t0
        stats = response_stats(rollout, golds)
        row = {
            "stage": stage,
            "step": step,
            "reward": float(scores.mean()),
            **stats,
            **update,
            "tokens_per_s": round(float(rollout.attention_mask.sum()) / max(elapsed, 1e-9), 1),
        }
        row = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
        rows.append(log.write(row) if log is not None else row)
        bar.set_postfix(reward=f"{row['reward']:.2f}", acc=f"{row['accuracy']:.2f}")
    return rows
