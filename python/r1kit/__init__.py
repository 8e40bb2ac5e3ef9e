"""r1kit: fast, exact hot loops for LLM reinforcement learning.

r1kit implements the pieces of two recipes that sit in every RL step: Parallel-R1 (parallel
thinking blocks, their attention masks and rewards) and ZeroSearch (a simulated search engine whose
noise rises on a curriculum). The numerics run in a Rust core on libtorch, take and return
``torch.Tensor`` without copies, and give the same bits whatever the thread count.

Example:
    >>> import r1kit
    >>> schedule = r1kit.NoiseSchedule(start=0.0, end=0.5, total_steps=203)
    >>> round(schedule.probability(100), 3)
    0.163
"""

from __future__ import annotations

# libtorch must be loaded (and torch.Tensor registered) before the extension module is imported.
import torch  # noqa: F401  # isort: skip

from importlib.metadata import PackageNotFoundError, version

from r1kit import _core, rewards, rl, search
from r1kit.curriculum import NoiseSchedule
from r1kit.errors import (
    ArgumentError,
    ArgumentTypeError,
    DeviceError,
    DtypeError,
    R1KitError,
    ShapeError,
    StructureError,
    TorchError,
)
from r1kit.structure import ParallelLayout, ParallelTags, parse_parallel

try:
    __version__ = version("r1kit")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0.0.0+unknown"


def set_num_threads(n: int) -> None:
    """Sets the number of threads r1kit's Rust core uses in this process.

    The default is ``R1KIT_NUM_THREADS`` if set, else all cores; a process forked from one that
    already used r1kit (DataLoader workers, Ray) starts at one thread. Results never depend on it.

    Args:
        n: A positive number of threads.

    Raises:
        ArgumentError: If ``n`` is not positive.

    Example:
        >>> r1kit.set_num_threads(2); r1kit.get_num_threads()
        2
    """
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """Returns the number of threads of r1kit's pool in this process.

    Example:
        >>> r1kit.get_num_threads() >= 1
        True
    """
    return _core.get_num_threads()


__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "DeviceError",
    "DtypeError",
    "NoiseSchedule",
    "ParallelLayout",
    "ParallelTags",
    "R1KitError",
    "ShapeError",
    "StructureError",
    "TorchError",
    "__version__",
    "get_num_threads",
    "parse_parallel",
    "rewards",
    "rl",
    "search",
    "set_num_threads",
]
