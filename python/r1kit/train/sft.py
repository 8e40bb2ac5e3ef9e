"""Supervised fine-tuning: cross-entropy on response tokens only, structured or causal.

Example:
    >>> from r1kit.train.model import build_tokenizer, tiny_model
    >>> from r1kit.train.data import easy_arithmetic
    >>> tok = build_tokenizer(); model = tiny_model(len(tok), hidden_size=32, num_layers=1)
    >>> cfg = SFTConfig(steps=3, batch_size=4, lr=3e-3, progress=False)
    >>> rows = sft_train(model, tok, easy_arithmetic(8), cfg)
    >>> len(rows), rows[-1]["loss"] < rows[0]["loss"]
    (3, True)
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from r1kit.errors import ArgumentError
from r1kit.structure import ParallelTags
from r1kit.train.core import (
    MetricsLog,
    SFTBatch,
    encode_sft,
    epoch_batches,
    progress_bar,
    sequence_log_probs,
)
from r1kit.train.data import Example

__all__ = ["SFTConfig", "sft_loss", "sft_train", "sft_train_batches"]


@dataclass
class SFTConfig:
    """Settings of :func:`sft_train`.

    Attributes:
        steps: Optimizer steps.
        batch_size: Examples per step (drawn without replacement, reshuffled each epoch).
        lr: AdamW learning rate (linear warm-up over the first 10% of steps, then constant).
        weight_decay: AdamW weight decay.
        max_grad_norm: Gradient-norm clip.
        structured: Structured (Unseen) mask and positions; False: causal (Seen).
        max_length: Truncate rows to this many tokens.
        seed: Seed of the shuffling.
        progress: Show a tqdm bar.
    """

    steps: int = 200
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    structured: bool = True
    max_length: int | None = 256
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ArgumentError(f"`{name}`: expected a positive int, got {value!r}")
        if not self.lr > 0:
            raise ArgumentError(f"`lr`: expected a positive learning rate, got {self.lr!r}")


def sft_loss(
    model: Any, batch: SFTBatch, tags: ParallelTags, structured: bool = True
) -> torch.Tensor:
    """Mean negative log-likelihood of the response tokens (``<eos>`` included).

    Args:
        model: A ``transformers`` causal LM.
        batch: From :func:`r1kit.train.core.encode_sft`.
        tags: The tag ids.
        structured: Structured (Unseen) or causal (Seen) layout.

    Returns:
        A 0-d tensor.
    """
    lp = sequence_log_probs(
        model, batch.input_ids, batch.attention_mask, batch.response_start, tags, structured
    )
    return -(lp * batch.loss_mask).sum() / batch.loss_mask.sum().clamp(min=1.0)


def sft_train(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    config: SFTConfig,
    log: MetricsLog | None = None,
    stage: str = "sft",
    tags: ParallelTags | None = None,
) -> list[dict[str, Any]]:
    """Trains ``model`` in place on ``(prompt, response)`` examples.

    Args:
        model: A ``transformers`` causal LM.
        tokenizer: Its tokenizer (with the tags as single tokens).
        examples: Training examples (``response`` must be non-empty).
        config: The settings.
        log: Where each step's metrics go (also returned).
        stage: The ``stage`` field of the metric rows.
        tags: The tag ids (default: looked up in ``tokenizer``).

    Returns:
        One metrics dict per step (``stage``, ``step``, ``loss``, ``grad_norm``, ``lr``,
        ``tokens_per_s``).

    Raises:
        ArgumentError: If there are no examples or one has an empty response.
    """
    if not examples:
        raise ArgumentError("`examples`: expected at least one example, got none")
    for i, ex in enumerate(examples):
        if not ex.response:
            raise ArgumentError(f"`examples[{i}]`: field 'response' is empty (SFT needs targets)")

    def make_batch(picked: list[int]) -> SFTBatch:
        pairs = [(examples[i].prompt, examples[i].response) for i in picked]
        return encode_sft(tokenizer, pairs, config.max_length)

    tags = tags or ParallelTags.from_tokenizer(tokenizer)
    return sft_train_batches(model, make_batch, len(examples), config, log, stage, tags)


def sft_train_batches(
    model: Any,
    make_batch: Callable[[list[int]], SFTBatch],
    n_rows: int,
    config: SFTConfig,
    log: MetricsLog | None,
    stage: str,
    tags: ParallelTags,
) -> list[dict[str, Any]]:
    """The loop of :func:`sft_train` over any batches: ``make_batch(row indices) -> SFTBatch``.

    Rows are drawn without replacement and reshuffled each epoch (seeded by ``config.seed``);
    the loss counts the tokens each batch's ``loss_mask`` marks (recipes use it to leave
    environment tokens, e.g. search observations, out of the loss).

    Args:
        model: A ``transformers`` causal LM (trained in place).
        make_batch: Builds the batch of the given row indices.
        n_rows: Number of rows to draw from.
        config: The settings.
        log: Where each step's metrics go.
        stage: The ``stage`` field of the metric rows.
        tags: The tag ids.

    Returns:
        One metrics dict per step, as :func:`sft_train`.

    Raises:
        ArgumentError: If ``n_rows < 1``.
    """
    if n_rows < 1:
        raise ArgumentError(f"`n_rows`: expected at least one row, got {n_rows}")
    rng = random.Random(config.seed)
    batches = epoch_batches(n_rows, config.batch_size, rng)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, config.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    model.train()
    rows = []
    bar = progress_bar(config.steps, stage, config.progress)
    for step in bar:
        picked = next(batches)
        t0 = time.perf_counter()
        batch = make_batch(picked)
        loss = sft_loss(model, batch, tags, config.structured)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        loss = loss.detach()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        elapsed = time.perf_counter() - t0
        row = {
            "stage": stage,
            "step": step,
            "loss": round(loss.item(), 6),
            "grad_norm": round(float(norm), 6),
            "lr": lr,
            "tokens_per_s": round(float(batch.attention_mask.sum()) / max(elapsed, 1e-9), 1),
        }
        rows.append(log.write(row) if log is not None else row)
        bar.set_postfix(loss=f"{row['loss']:.3f}")
    return rows
