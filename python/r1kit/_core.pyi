"""Type stubs of r1kit's Rust extension. Users call the wrappers in ``r1kit``, not this module."""

from collections.abc import Hashable, Sequence
from typing import final

import torch

__all__ = [
    "NoiseSchedule",
    "TokenDecoder",
    "_resolve_path",
    "_roundtrip",
    "_tensor_info",
    "agg_loss",
    "agg_loss_backward",
    "apply_kl_penalty",
    "dense_group_ids",
    "entropy_from_logits",
    "extract_answer",
    "extract_math_answer",
    "gae",
    "get_num_threads",
    "grpo",
    "grpo_passk",
    "hash_key",
    "kl_penalty",
    "kl_penalty_backward",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "math_equal",
    "math_judge",
    "math_scores",
    "normalize_answer",
    "normalize_math_answer",
    "observation_mask",
    "outcome",
    "parallel_format",
    "parallel_r1_recipe",
    "parallel_r1_rewards",
    "policy_loss",
    "policy_loss_backward",
    "qa_format_scores",
    "qa_scores",
    "reinforce_plus_plus",
    "remax",
    "rloo",
    "set_num_threads",
    "spans_mask",
]

def set_num_threads(n: int) -> None:
    """Sets the size of r1kit's thread pool for this process."""

def get_num_threads() -> int:
    """Returns the size of r1kit's thread pool for this process."""

def hash_key(key: int | str) -> int:
    """The int64 a key stands for in noise draws (strings: FNV-1a 64 + SplitMix64 finaliser)."""

def _roundtrip(tensor: torch.Tensor) -> torch.Tensor:
    """Passes a tensor through the Rust bridge and back; the result shares its storage."""

def _tensor_info(tensor: torch.Tensor) -> tuple[list[int], str, str, int]:
    """(shape, dtype name, device name, data address) as the Rust side sees the tensor."""

@final
class NoiseSchedule:
    """ZeroSearch's curriculum noise schedule (see ``r1kit.curriculum.NoiseSchedule``)."""

    def __new__(
        cls,
        start: float,
        end: float,
        total_steps: int,
        base: float | None = None,
        kind: str | None = None,
    ) -> NoiseSchedule: ...
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    @property
    def total_steps(self) -> int: ...
    @property
    def base(self) -> float: ...
    @property
    def kind(self) -> str: ...
    def probability(self, step: int) -> float:
        """Noise probability at one step."""
    def probabilities(
        self, steps: torch.Tensor | Sequence[int], path: str | None = None
    ) -> torch.Tensor:
        """float64 probabilities for an integer tensor of steps."""
    def draw_noisy(
        self,
        step: int,
        keys: object,
        turns: int | torch.Tensor | Sequence[int] | None = None,
        seed: int | None = None,
        path: str | None = None,
    ) -> torch.Tensor:
        """One deterministic Bernoulli(p(step)) draw per key."""

def dense_group_ids(ids: Sequence[Hashable]) -> torch.Tensor: ...
def masked_mean(
    values: torch.Tensor, mask: torch.Tensor, path: str | None = None
) -> torch.Tensor: ...
def masked_var(
    values: torch.Tensor, mask: torch.Tensor, path: str | None = None
) -> torch.Tensor: ...
def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, path: str | None = None
) -> torch.Tensor: ...
def gae(
    token_level_rewards: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    gamma: float,
    lam: float,
    path: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]: ...
def reinforce_plus_plus(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    gamma: float,
    path: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]: ...
def grpo(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: torch.Tensor,
    norm_by_std: bool,
    epsilon: float,
    singleton: str,
    path: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]: ...
def rloo(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: torch.Tensor,
    singleton: str,
    path: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]: ...
def outcome(
    estimator: str,
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: torch.Tensor,
    path: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]: ...
def remax(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    reward_baselines: torch.Tensor,
    path: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]: ...
def _resolve_path(tensor: torch.Tensor, path: str | None = None) -> str: ...
def grpo_passk(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: torch.Tensor,
    norm_by_std: bool,
    epsilon: float,
    path: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]: ...
def kl_penalty(
    log_prob: torch.Tensor, ref_log_prob: torch.Tensor, kind: str, path: str | None = None
) -> torch.Tensor: ...
def kl_penalty_backward(
    grad_output: torch.Tensor,
    log_prob: torch.Tensor,
    ref_log_prob: torch.Tensor,
    kind: str,
    path: str | None = None,
) -> torch.Tensor: ...
def apply_kl_penalty(
    token_level_scores: torch.Tensor,
    old_log_prob: torch.Tensor,
    ref_log_prob: torch.Tensor,
    response_mask: torch.Tensor,
    kind: str,
    beta: float,
    path: str | None = None,
) -> tuple[torch.Tensor, float]: ...
def policy_loss(
    kind: str,
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_ratio_low: float,
    clip_ratio_high: float,
    clip_ratio_c: float,
    agg: str,
    loss_scale_factor: float | None = None,
    path: str | None = None,
) -> tuple[torch.Tensor, tuple[float, float, float], torch.Tensor, torch.Tensor]: ...
def policy_loss_backward(
    kind: str,
    grad_output: float,
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_ratio_low: float,
    clip_ratio_high: float,
    clip_ratio_c: float,
    agg: str,
    loss_scale_factor: float | None,
    row_coef: torch.Tensor,
    row_seq: torch.Tensor,
) -> torch.Tensor: ...
def agg_loss(
    loss_mat: torch.Tensor,
    loss_mask: torch.Tensor,
    mode: str,
    loss_scale_factor: float | None = None,
    path: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]: ...
def agg_loss_backward(
    grad_output: float, loss_mat: torch.Tensor, loss_mask: torch.Tensor, row_coef: torch.Tensor
) -> torch.Tensor: ...
def entropy_from_logits(logits: torch.Tensor, path: str | None = None) -> torch.Tensor: ...

# --- structure ---
__all__ += ["ParallelLayoutCore", "check_parallel_tags", "parse_parallel"]

def check_parallel_tags(tags: tuple[int, int, int, int, int, int]) -> None: ...
def parse_parallel(
    input_ids: torch.Tensor,
    tags: tuple[int, int, int, int, int, int],
    attention_mask: torch.Tensor | None = None,
    response_start: int | torch.Tensor | None = None,
    on_error: str | None = None,
    structured: bool = True,
    path: str | None = None,
) -> tuple[ParallelLayoutCore, torch.Tensor]: ...

@final
class ParallelLayoutCore:
    @property
    def batch_size(self) -> int: ...
    @property
    def seq_len(self) -> int: ...
    @property
    def structured(self) -> bool: ...
    def status(self) -> list[tuple[str, int | None]]: ...
    def id_tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...
    def stats(self) -> list[dict[str, object]]: ...
    def blocks(self, row: int) -> list[dict[str, object]]: ...
    def attention_mask(self, kind: str, dtype: str | None, max_bytes: int) -> torch.Tensor: ...
    def block_tables(
        self, block_size: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]: ...
    def intervals(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...

# --- rewards ---

@final
class TokenDecoder:
    """A tokenizer.json decoder in Rust (``tokenizers`` crate); decodes batches in parallel."""

    @staticmethod
    def from_file(path: str) -> TokenDecoder: ...
    @staticmethod
    def from_json(json: str, clean_up_tokenization_spaces: bool = False) -> TokenDecoder: ...
    @staticmethod
    def from_hf(tokenizer: object) -> TokenDecoder: ...
    def decode(
        self,
        ids: torch.Tensor | Sequence[Sequence[int]],
        attention_mask: torch.Tensor | None = None,
        skip_special_tokens: bool = False,
    ) -> list[str]: ...
    def token_to_id(self, token: str) -> int | None: ...
    @property
    def vocab_size(self) -> int: ...

def extract_answer(
    responses: Sequence[str] | None,
    ids: torch.Tensor | Sequence[Sequence[int]] | None = None,
    attention_mask: torch.Tensor | None = None,
    decoder: TokenDecoder | None = None,
) -> list[str | None]: ...
def normalize_answer(s: str, unicode: bool = False) -> str: ...
def qa_scores(
    responses: Sequence[str] | None,
    golds: Sequence[str | Sequence[str]],
    metric: str,
    unicode: bool,
    ids: torch.Tensor | Sequence[Sequence[int]] | None = None,
    attention_mask: torch.Tensor | None = None,
    decoder: TokenDecoder | None = None,
) -> tuple[torch.Tensor, list[str | None]]: ...
def qa_format_scores(
    responses: Sequence[str] | None,
    golds: Sequence[str | Sequence[str]],
    metric: str,
    unicode: bool,
    structure_score: float,
    final_format_score: float,
    ids: torch.Tensor | Sequence[Sequence[int]] | None = None,
    attention_mask: torch.Tensor | None = None,
    decoder: TokenDecoder | None = None,
) -> torch.Tensor: ...
def extract_math_answer(
    responses: Sequence[str] | None,
    ids: torch.Tensor | Sequence[Sequence[int]] | None = None,
    attention_mask: torch.Tensor | None = None,
    decoder: TokenDecoder | None = None,
) -> list[str | None]: ...
def math_equal(pred: str, gold: str, percent: bool = False) -> bool: ...
def normalize_math_answer(s: str) -> str: ...
def math_judge(
    responses: Sequence[str] | None,
    golds: Sequence[str | Sequence[str]],
    percent: bool,
    ids: torch.Tensor | Sequence[Sequence[int]] | None = None,
    attention_mask: torch.Tensor | None = None,
    decoder: TokenDecoder | None = None,
) -> tuple[list[int], list[str | None]]: ...
def math_scores(
    responses: Sequence[str] | None,
    golds: Sequence[str | Sequence[str]],
    correct: float,
    incorrect: float,
    percent: bool,
    ids: torch.Tensor | Sequence[Sequence[int]] | None = None,
    attention_mask: torch.Tensor | None = None,
    decoder: TokenDecoder | None = None,
) -> torch.Tensor: ...
def parallel_format(
    responses: Sequence[str] | None = None,
    ids: torch.Tensor | Sequence[Sequence[int]] | None = None,
    attention_mask: torch.Tensor | None = None,
    tags: Sequence[str] | Sequence[int] | None = None,
    decoder: TokenDecoder | None = None,
) -> tuple[list[bool], list[bool], list[int], list[list[int]], list[str]]: ...
def parallel_r1_recipe(recipe: str, window: int, acc_steps: int, bonus: float) -> None: ...
def parallel_r1_rewards(
    recipe: str,
    window: int,
    acc_steps: int,
    bonus: float,
    responses: Sequence[str] | None,
    golds: Sequence[str | Sequence[str]],
    step: int,
    ids: torch.Tensor | Sequence[Sequence[int]] | None = None,
    attention_mask: torch.Tensor | None = None,
    decoder: TokenDecoder | None = None,
    tags: Sequence[str] | Sequence[int] | None = None,
) -> torch.Tensor: ...

# --- search ---

def observation_mask(
    input_ids: torch.Tensor,
    info_open: int,
    info_close: int,
    attention_mask: torch.Tensor | None = None,
    before: Sequence[int] | None = None,
    after: Sequence[int] | None = None,
    path: str | None = None,
) -> torch.Tensor:
    """Observation loss mask from token ids (see ``r1kit.search.observation_mask``)."""

def spans_mask(
    lengths: Sequence[int], width: int, spans: Sequence[tuple[int, int, int]]
) -> torch.Tensor:
    """int64 loss mask from recorded (row, start, end) spans (see ``r1kit.search.spans_mask``)."""
