"""A thin, readable trainer for Hugging Face causal LMs, built on r1kit's kernels.

- :mod:`r1kit.train.data`: embedded synthetic data (easy / hard arithmetic, a fact table) and
  JSONL loading that names the bad line and field;
- :mod:`r1kit.train.model`: a character tokenizer with the tags as special tokens, a tiny random
  Qwen2, and :func:`add_tag_tokens` for real tokenizers;
- :mod:`r1kit.train.core`: structured forward passes (:func:`r1kit.parse_parallel` mask and
  positions), sampling under the training layout, evaluation, metrics;
- :mod:`r1kit.train.sft` and :mod:`r1kit.train.grpo`: the two plain-PyTorch loops;
- :mod:`r1kit.train.zerosearch`: search rollouts of a policy in :class:`r1kit.search.SearchEnv`
  (KV-cached sampling), GRPO / REINFORCE++ on them, the ``zerosearch`` recipe;
- :mod:`r1kit.train.recipes`: ``parallel_r1`` end to end and the recipe registry;
  :mod:`r1kit.train.cli`: ``r1kit demo`` and ``r1kit train``.

Needs the ``train`` extra (transformers, tqdm, matplotlib; pyarrow for ``.parquet`` data).

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
    load_data,
    load_jsonl,
    load_parquet,
    save_jsonl,
)
from r1kit.train.grpo import ESTIMATORS, GRPOConfig, grpo_train, grpo_update
from r1kit.train.model import add_tag_tokens, build_tokenizer, tiny_model
from r1kit.train.recipes import RECIPES, ParallelR1Config, get_recipe, run_parallel_r1
from r1kit.train.sft import SFTConfig, sft_loss, sft_train
from r1kit.train.zerosearch import (
    QASimulator,
    SearchPolicy,
    ZeroSearchConfig,
    evaluate_search,
    run_zerosearch,
    search_grpo_train,
    search_traces,
)

__all__ = [
    "ESTIMATORS",
    "RECIPES",
    "Example",
    "GRPOConfig",
    "MetricsLog",
    "ParallelR1Config",
    "QASimulator",
    "Rollout",
    "SFTBatch",
    "SFTConfig",
    "SearchPolicy",
    "ZeroSearchConfig",
    "add_tag_tokens",
    "build_tokenizer",
    "easy_arithmetic",
    "encode_sft",
    "evaluate",
    "evaluate_search",
    "fact_table",
    "get_recipe",
    "grpo_train",
    "grpo_update",
    "hard_arithmetic",
    "layout_inputs",
    "load_data",
    "load_jsonl",
    "load_parquet",
    "run_parallel_r1",
    "run_zerosearch",
    "sample",
    "save_jsonl",
    "search_grpo_train",
    "search_traces",
    "sequence_log_probs",
    "sft_loss",
    "sft_train",
    "tiny_model",
]
