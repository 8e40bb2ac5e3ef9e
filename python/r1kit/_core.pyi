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
) -> tuple[ParallelLayoutCore, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]: ...

@final
class ParallelLayoutCore:
    @property
    def batch_size(self) -> int: ...
    @property
    def seq_len(self) -> int: ...
    @property
    def structured(self) -> bool: ...
    def status(self) -> list[tuple[str, int | None]]: ...
    def stats(self) -> list[dict[str, object]]: ...
    def blocks(self, row: int) -> list[dict[str, object]]: ...
    def attention_mask(self, kind: str, dtype: str | None, max_bytes: int) -> torch.Tensor: ...
    def block_tables(
        self, block_size: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]: ...
    def intervals(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...
