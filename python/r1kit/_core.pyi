"""Type stubs of r1kit's Rust extension. Users call the wrappers in ``r1kit``, not this module."""

from collections.abc import Sequence
from typing import final

import torch

__all__ = [
    "NoiseSchedule",
    "_roundtrip",
    "_tensor_info",
    "gae",
    "get_num_threads",
    "grpo",
    "hash_key",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "outcome",
    "reinforce_plus_plus",
    "remax",
    "rloo",
    "set_num_threads",
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

def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...
def masked_var(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...
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

# --- rewards ---

__all__ += [
    "TokenDecoder",
    "extract_answer",
    "extract_math_answer",
    "math_equal",
    "math_judge",
    "math_scores",
    "normalize_answer",
    "normalize_math_answer",
    "parallel_format",
    "parallel_r1_recipe",
    "parallel_r1_rewards",
    "qa_format_scores",
    "qa_scores",
]

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
