"""A thin, readable trainer for Hugging Face causal LMs, built on r1kit's kernels.

- :mod:`r1kit.train.data`: embedded synthetic data (easy / hard arithmetic, a fact table) and
  JSONL loading that names the bad line and field;
- :mod:`r1kit.train.model`: a character tokenizer with the tags as special tokens, a tiny random
  Qwen2, and :func:`add_tag_tokens` for real tokenizers;
- :mod:`r1kit.train.core`: structured forward passes (:func:`r1kit.parse_parallel` mask and
  positions), sampling under the training layout, evaluation, metrics;
- :mod:`r1kit.train.sft` and :mod:`r1kit.train.grpo`: the two plain-PyTorch loops;
- :mod:`r1kit.train.recipes`: ``parallel_r1`` end to end; :mod:`r1kit.train.cli`: ``r1kit demo``.

Needs the ``train`` extra (transformers, tqdm).

Example:
    >>> from r1kit import train
    >>> tok = train.build_tokenizer()
    >>> train.easy_arithmetic(1, seed=3)[0].answer
    '27'
"""

from __future__ import annotations

from r1kit.train.core import (
    MetricsLog,
    Rollout,
    SFTBatch,
    encode_sft,
    evaluate,
    layout_inputs,
    sample,
    sequence_log_probs,
)
from r1kit.train.data import (
    Example,
    easy_arithmetic,
    fact_table,
    hard_arithmetic,
    load_jsonl,
    save_jsonl,
)
from r1kit.train.grpo import ESTIMATORS, GRPOConfig, grpo_train, grpo_update
from r1kit.train.model import add_tag_tokens, build_tokenizer, tiny_model
from r1kit.train.recipes import RECIPES, ParallelR1Config, get_recipe, run_parallel_r1
from r1kit.train.sft import SFTConfig, sft_loss, sft_train

__all__ = [
    "ESTIMATORS",
    "RECIPES",
    "Example",
    "GRPOConfig",
    "MetricsLog",
    "ParallelR1Config",
    "Rollout",
    "SFTBatch",
    "SFTConfig",
    "add_tag_tokens",
    "build_tokenizer",
    "easy_arithmetic",
    "encode_sft",
    "evaluate",
    "fact_table",
    "get_recipe",
    "grpo_train",
    "grpo_update",
    "hard_arithmetic",
    "layout_inputs",
    "load_jsonl",
    "run_parallel_r1",
    "sample",
    "save_jsonl",
    "sequence_log_probs",
    "sft_loss",
    "sft_train",
    "tiny_model",
]
