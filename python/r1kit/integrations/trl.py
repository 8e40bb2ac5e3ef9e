"""r1kit inside TRL 1.16: reward functions and a structured, estimator-pluggable GRPO trainer.

Reward functions have TRL's signature ``(prompts, completions, completion_ids=None, **kwargs)
-> list[float | None]``: dataset columns arrive as keyword arguments (one value per completion),
conversational completions (lists of messages) are scored on their assistant text, and a
completion that is None gives None (TRL skips it). Scoring runs in Rust over the whole batch.

Example:
    >>> reward = qa_f1_reward(golds_column="golden_answers")
    >>> reward(prompts=["q", "q"], completions=["<answer>Paris</answer>", None],
    ...        golden_answers=[["Paris", "Paris, France"], ["Rome"]])
    [1.0, None]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from r1kit import rl
from r1kit.errors import ArgumentError, ArgumentTypeError
from r1kit.rewards import ParallelR1Reward, math_scores, qa_scores
from r1kit.structure import ParallelTags, parse_parallel

__all__ = [
    "RewardFunc",
    "StructuredGRPOTrainer",
    "math_accuracy_reward",
    "parallel_r1_reward",
    "qa_f1_reward",
]

RewardFunc = Callable[..., list[float | None]]


def _text(completion: Any) -> str | None:
    """A completion's text: a str, or the assistant contents of a list of messages."""
    if completion is None or isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, Sequence):
        parts: list[str] = []
        for message in completion:
            if not isinstance(message, dict):
                raise ArgumentTypeError(
                    "`completions`: expected str or a list of message dicts, got an item of type "
                    f"{type(message).__name__}"
                )
            if message.get("role", "assistant") != "assistant":
                continue
            content = message.get("content", "")
            if isinstance(content, list):  # multimodal parts: keep the text ones
                content = "".join(
                    p.get("text", "") for p in content if isinstance(p, dict) and "text" in p
                )
            parts.append(str(content))
        return "".join(parts)
    raise ArgumentTypeError(
        f"`completions`: expected str or a list of messages, got {type(completion).__name__}"
    )


def _column(kwargs: dict[str, Any], name: str, n: int) -> list[Any]:
    if name not in kwargs:
        hidden = ("trainer_state", "log_extra", "log_metric")
        available = sorted(k for k in kwargs if k not in hidden)
        raise ArgumentError(
            f"`{name}`: expected a dataset column of that name (one value per completion); "
            f"the batch has columns {available}"
        )
    values = list(kwargs[name])
    if len(values) != n:
        raise ArgumentError(
            f"`{name}`: expected {n} values (one per completion), got {len(values)}"
        )
    return values


def _scored(
    completions: Sequence[Any],
    score: Callable[[list[str], list[int]], torch.Tensor],
) -> list[float | None]:
    """Scores the non-None completions in one batch call; None stays None."""
    texts = [_text(c) for c in completions]
    keep = [i for i, t in enumerate(texts) if t is not None]
    out: list[float | None] = [None] * len(texts)
    if keep:
        values = score([texts[i] for i in keep if texts[i] is not None], keep).tolist()  # type: ignore[misc]
        for i, v in zip(keep, values, strict=True):
            out[i] = float(v)
    return out


def qa_f1_reward(
    golds_column: str = "golden_answers",
    metric: Literal["f1", "em", "contains"] = "f1",
) -> RewardFunc:
    """ZeroSearch's reward: F1 (or EM / contains) of the last ``<answer>`` against the golds.

    Args:
        golds_column: the dataset column with each prompt's gold answer(s) (a str or a list).
        metric: see :func:`r1kit.rewards.qa_scores`.
    """

    def qa_f1(
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Any = None,
        **kwargs: Any,
    ) -> list[float | None]:
        golds = _column(kwargs, golds_column, len(completions))
        return _scored(
            completions, lambda texts, rows: qa_scores(texts, [golds[i] for i in rows], metric)
        )

    qa_f1.__name__ = f"qa_{metric}"
    return qa_f1


def math_accuracy_reward(
    answer_column: str = "answer", correct: float = 1.0, incorrect: float = 0.0
) -> RewardFunc:
    """``correct`` where the response's final answer equals the column's answer, else
    ``incorrect`` (:func:`r1kit.rewards.math_scores`)."""

    def math_accuracy(
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Any = None,
        **kwargs: Any,
    ) -> list[float | None]:
        golds = _column(kwargs, answer_column, len(completions))
        return _scored(
            completions,
            lambda texts, rows: math_scores(texts, [golds[i] for i in rows], correct, incorrect),
        )

    return math_accuracy


def parallel_r1_reward(
    recipe: Literal["accuracy", "gsm8k_stage", "alternating"] = "alternating",
    answer_column: str = "answer",
    window: int = 10,
    acc_steps: int = 8,
    bonus: float = 1.2,
) -> RewardFunc:
    """Parallel-R1's reward schedule (:class:`r1kit.rewards.ParallelR1Reward`); the training
    step is TRL's ``trainer_state.global_step + 1``."""
    schedule = ParallelR1Reward(recipe, window, acc_steps, bonus)

    def parallel_r1(
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Any = None,
        **kwargs: Any,
    ) -> list[float | None]:
        state = kwargs.get("trainer_state")
        if state is None or not hasattr(state, "global_step"):
            raise ArgumentError(
                "`trainer_state`: expected TRL's TrainerState (GRPOTrainer passes it) to read "
                "the training step"
            )
        golds = _column(kwargs, answer_column, len(completions))
        step = int(state.global_step) + 1
        return _scored(
            completions, lambda texts, rows: schedule(texts, [golds[i] for i in rows], step)
        )

    parallel_r1.__name__ = f"parallel_r1_{recipe}"
    return parallel_r1


Estimator = Literal["grpo", "dr_grpo", "rloo", "opo", "gpg", "reinforce_plus_plus_baseline"]


def _estimator(name: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Outcome advantages ``[N]`` from sequence rewards ``[N]`` and group ids."""

    def run(rewards: torch.Tensor, ones: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        r = rewards[:, None]
        if name == "grpo":
            adv, _ = rl.grpo(r, ones, groups, True, 1e-4, "zero")
        elif name == "dr_grpo":
            adv, _ = rl.grpo(r, ones, groups, False)
        elif name == "rloo":
            adv, _ = rl.rloo(r, ones, groups, "zero")
        elif name == "opo":
            adv, _ = rl.opo(r, ones, groups)
        elif name == "gpg":
            adv, _ = rl.gpg(r, ones, groups)
        else:
            adv, _ = rl.reinforce_plus_plus_baseline(r, ones, groups)
        return adv[:, 0]

    return run


_ESTIMATORS = ("grpo", "dr_grpo", "rloo", "opo", "gpg", "reinforce_plus_plus_baseline")


def _trainer_base() -> type:
    try:
        from trl.trainer.grpo_trainer import GRPOTrainer
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("r1kit.integrations.trl needs TRL 1.16: pip install 'r1kit[trl]'") from e
    return GRPOTrainer


class StructuredGRPOTrainer(_trainer_base()):  # type: ignore[misc]
    """TRL's ``GRPOTrainer`` with Parallel-R1's structured attention and r1kit's estimators.

    When computing per-token log-probs, every sequence is parsed for parallel blocks
    (:func:`r1kit.parse_parallel`, tags before the completion are ordinary text) and the model
    gets the structured ``[B, 1, L, L]`` mask (bool for sdpa, additive for eager attention) and
    position ids that restart in every path. This overrides TRL's private
    ``_get_per_token_logps_and_entropies`` (text-only models): supported TRL range 1.16.x.

    Args:
        parallel_tags: the tag ids; default: looked up in ``processing_class``.
        structured: False keeps the causal ("Seen") variant (no mask change).
        advantage_estimator: replaces TRL's group normalisation by an ``r1kit.rl`` estimator
            (``"grpo"``: TRL's own formula, ``"dr_grpo"``, ``"rloo"``, ``"opo"``, ``"gpg"``,
            ``"reinforce_plus_plus_baseline"``), or None to keep TRL's.
        *args, **kwargs: ``GRPOTrainer``'s.
    """

    def __init__(
        self,
        *args: Any,
        parallel_tags: ParallelTags | None = None,
        structured: bool = True,
        advantage_estimator: Estimator | None = None,
        **kwargs: Any,
    ) -> None:
        if advantage_estimator is not None and advantage_estimator not in _ESTIMATORS:
            raise ArgumentError(
                f"`advantage_estimator`: expected one of {list(_ESTIMATORS)} or None, "
                f"got {advantage_estimator!r}"
            )
        super().__init__(*args, **kwargs)
        self.parallel_tags = parallel_tags or ParallelTags.from_tokenizer(self.processing_class)
        self.structured = structured
        self.advantage_estimator = advantage_estimator
        self._r1kit_rewards: torch.Tensor | None = None

    # -- structured log-probs ---------------------------------------------------------------

    def _get_per_token_logps_and_entropies(
        self,
        model: Any,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        logits_to_keep: int,
        batch_size: int | None = None,
        compute_entropy: bool = False,
        compute_aux_loss: bool = False,
        **multimodal: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if any(v is not None for v in multimodal.values()):
            raise ArgumentError(
                "StructuredGRPOTrainer supports text-only models (got multimodal inputs)"
            )
        batch_size = batch_size or input_ids.size(0)
        impl = getattr(getattr(model, "config", None), "_attn_implementation", "sdpa")
        dtype = next(model.parameters()).dtype
        logps, entropies, aux = [], [], []
        for start in range(0, input_ids.size(0), batch_size):
            ids = input_ids[start : start + batch_size]
            mask2d = attention_mask[start : start + batch_size]
            layout = parse_parallel(
                ids,
                self.parallel_tags,
                attention_mask=mask2d,
                response_start=ids.size(1) - logits_to_keep,
                structured=self.structured,
            )
            if impl == "eager":
                mask = layout.attention_mask("additive", dtype)
            else:
                mask = layout.attention_mask("bool")
            labels = ids.masked_fill(mask2d == 0, -100)
            labels[:, :-logits_to_keep] = -100
            inputs: dict[str, Any] = {
                "input_ids": ids,
                "attention_mask": mask,
                "position_ids": layout.position_ids,
            }
            if compute_aux_loss:
                inputs["output_router_logits"] = True
            with self.accelerator.autocast():
                out = model(**inputs, labels=labels, fused_lm_head=True)
            logps.append(out.log_probs[:, -logits_to_keep:])
            if compute_entropy:
                entropies.append(out.entropy[:, -logits_to_keep:])
            if compute_aux_loss:
                aux.append(out.aux_loss)
        return (
            torch.cat(logps, dim=0),
            torch.cat(entropies, dim=0) if compute_entropy else None,
            torch.stack(aux).mean() if compute_aux_loss else None,
        )

    # -- r1kit advantages -------------------------------------------------------------------

    def _calculate_rewards(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        rewards_per_func: torch.Tensor = super()._calculate_rewards(*args, **kwargs)
        self._r1kit_rewards = rewards_per_func
        return rewards_per_func

    def _generate_and_score_completions(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        output: dict[str, Any] = super()._generate_and_score_completions(*args, **kwargs)
        if self.advantage_estimator is None or self._r1kit_rewards is None:
            return output
        per_func = self._r1kit_rewards
        weights = self.reward_weights.to(per_func.device)
        unscorable = torch.isnan(per_func).all(dim=1)
        rewards = (per_func * weights[None, :]).nansum(dim=1).float().cpu()
        n = rewards.shape[0]
        group = self.num_generations if self.model.training else self.num_generations_eval
        groups = torch.arange(n) // group  # TRL repeats each prompt `group` times in a row
        adv = _estimator(self.advantage_estimator)(rewards, torch.ones(n, 1), groups)
        adv[unscorable.cpu()] = 0.0
        local = output["advantages"].shape[0]
        start = self.accelerator.process_index * local
        output["advantages"] = adv[start : start + local].to(output["advantages"].device)
        return output
