"""ZeroSearch's curriculum noise schedule and deterministic noise draws.

During ZeroSearch training a simulation LLM replaces the search engine. Each search call returns
either useful or noisy documents, and the probability of noisy ones rises from ``start`` to ``end``
over ``total_steps`` training steps::

    exponential  p(i) = start + (base**(i/m) - 1) / (base - 1) * (end - start)  (ZeroSearch: base 4)
    linear       p(i) = start + (i/m) * (end - start)
    cosine       p(i) = start + (1 - cos(pi * i/m)) / 2 * (end - start)
    constant     p(i) = end                       (start must equal end)

with ``p(i) = end`` for every ``i >= m``. ``base -> 1`` is the linear limit, computed exactly.

Whether one call is noisy is a Bernoulli(p(step)) draw from a counter-based hash of
``(seed, step, key, turn)``: the same call gets the same answer in every run, whatever the thread
count, the batch order or the other draws made. ``key`` identifies the trajectory (an int or a
str, e.g. a sample uid) and ``turn`` the search call within it.

Example:
    >>> from r1kit.curriculum import NoiseSchedule
    >>> s = NoiseSchedule(0.0, 0.5, total_steps=203)
    >>> [round(s.probability(i), 3) for i in (1, 100, 202, 500)]
    [0.001, 0.163, 0.495, 0.5]
    >>> s.draw_noisy(step=100, keys=["uid-0", "uid-1", "uid-2"], turns=[0, 0, 1]).dtype
    torch.bool
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from r1kit import _core
from r1kit.errors import ArgumentTypeError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["Keys", "NoiseSchedule", "ScheduleKind", "TensorPath", "hash_key"]

ScheduleKind = Literal["exponential", "linear", "cosine", "constant"]
TensorPath = Literal["auto", "cpu", "device"]
Keys = torch.Tensor | Sequence[int] | Sequence[str] | np.ndarray[Any, Any]


def hash_key(key: int | str) -> int:
    """Returns the int64 that ``key`` stands for in noise draws.

    Ints stand for themselves (as 64-bit two's complement); strings are hashed with FNV-1a 64 over
    their UTF-8 bytes followed by SplitMix64's finaliser. Use it to pre-hash string keys into a
    tensor, e.g. to draw on a GPU.

    Args:
        key: An int or a str.

    Returns:
        The key as a signed 64-bit int.

    Raises:
        ArgumentTypeError: If ``key`` is neither int nor str.

    Example:
        >>> hash_key(7)
        7
        >>> hash_key("uid-0") == hash_key("uid-0")
        True
    """
    return _core.hash_key(key)


def _as_keys(keys: object) -> object:
    """Normalises numpy arrays, ranges and iterables; tensors, lists, tuples pass through."""
    if isinstance(keys, (torch.Tensor, list, tuple)):
        return keys
    if isinstance(keys, np.ndarray):
        if keys.dtype.kind in "iu":
            return torch.from_numpy(np.ascontiguousarray(keys).astype(np.int64, copy=False))
        if keys.dtype.kind in "UO":
            return keys.tolist()
        raise ArgumentTypeError(
            f"`keys`: expected integer or string keys, got a numpy array of dtype {keys.dtype}"
        )
    if isinstance(keys, (str, bytes)):
        raise ArgumentTypeError(
            f"`keys`: expected a sequence of keys, got a single {type(keys).__name__}"
            " (wrap it in a list)"
        )
    if isinstance(keys, Iterable):
        return list(keys)
    return keys  # the core names the argument and the type in its error


class NoiseSchedule:
    """Curriculum for the probability that a simulated search returns noisy documents.

    Args:
        start: Probability at step 0, in [0, 1].
        end: Probability from step ``total_steps`` on, in [0, 1].
        total_steps: Number of steps ``m`` the curve spans (> 0).
        base: Base ``b`` of the exponential curve (> 0; 4 in ZeroSearch, 1 gives a line).
        kind: ``"exponential"`` (default), ``"linear"``, ``"cosine"`` or ``"constant"``.

    Raises:
        ArgumentError: ``start``/``end`` outside [0, 1], ``total_steps <= 0``, ``base <= 0``, an
            unknown ``kind``, or ``kind="constant"`` with ``start != end``.
        ArgumentTypeError: An argument of the wrong type (e.g. a float ``total_steps``).

    Example:
        >>> s = NoiseSchedule(0.0, 0.5, total_steps=203, base=4.0)
        >>> round(s.probability(150), 3)
        0.298
    """

    __slots__ = ("_core",)

    def __init__(
        self,
        start: float,
        end: float,
        total_steps: int,
        base: float = 4.0,
        kind: ScheduleKind = "exponential",
    ) -> None:
        self._core = _core.NoiseSchedule(start, end, total_steps, base, kind)

    @property
    def start(self) -> float:
        """Probability at step 0."""
        return self._core.start

    @property
    def end(self) -> float:
        """Probability from step ``total_steps`` on."""
        return self._core.end

    @property
    def total_steps(self) -> int:
        """Number of steps the curve spans."""
        return self._core.total_steps

    @property
    def base(self) -> float:
        """Base of the exponential curve."""
        return self._core.base

    @property
    def kind(self) -> ScheduleKind:
        """Shape of the curve."""
        kind: ScheduleKind = self._core.kind  # type: ignore[assignment]
        return kind

    def probability(self, step: int) -> float:
        """Noise probability at one training step.

        Args:
            step: Training step, >= 0 (ZeroSearch counts from 1).

        Returns:
            ``p(step)`` as a float.

        Raises:
            ArgumentError: If ``step < 0``.

        Example:
            >>> NoiseSchedule(0.0, 0.5, 203).probability(1)  # doctest: +ELLIPSIS
            0.0011...
        """
        return self._core.probability(step)

    def probabilities(
        self, steps: torch.Tensor | Sequence[int], *, path: TensorPath | None = None
    ) -> torch.Tensor:
        """Noise probabilities at many steps.

        Args:
            steps: Integer tensor of any shape (any device) or a list of ints.
            path: ``"cpu"`` or ``"device"`` to pick the implementation (default: by device,
                or ``"device"`` when ``R1KIT_FORCE_TENSOR_PATH=1``).

        Returns:
            float64 tensor shaped like ``steps`` on its device.

        Raises:
            ArgumentError: If a step is negative.
            DtypeError: If ``steps`` is not an integer tensor.

        Example:
            >>> NoiseSchedule(0.0, 1.0, 4, kind="linear").probabilities([0, 2, 4, 9])
            tensor([0.0000, 0.5000, 1.0000, 1.0000], dtype=torch.float64)
        """
        if isinstance(steps, (np.ndarray, range)):
            steps = torch.as_tensor(np.asarray(steps, dtype=np.int64))
        return self._core.probabilities(steps, path)

    def draw_noisy(
        self,
        step: int,
        keys: Keys,
        turns: int | torch.Tensor | Sequence[int] | None = None,
        seed: int = 0,
        *,
        path: TensorPath | None = None,
    ) -> torch.Tensor:
        """Decides, for each search call, whether it returns noisy documents.

        One Bernoulli(``p(step)``) draw per ``(seed, step, key, turn)``. The draw depends only on
        those four values, so it is reproducible across runs, thread counts and batch orders.

        Args:
            step: Training step, >= 0.
            keys: One key per call: a 1-D integer tensor (any device), or a list of ints or of
                strs (not mixed), or a numpy array of either.
            turns: Search turn of each call: None (all 0), one int for all, or one per key
                (tensor on the keys' device, or a list).
            seed: Run seed; any int in [-2**63, 2**64).
            path: ``"cpu"`` or ``"device"`` to pick the implementation.

        Returns:
            Bool tensor with one entry per key (True = noisy), on the keys' device (CPU for lists).

        Raises:
            ArgumentError: Negative ``step`` or turn.
            ArgumentTypeError: Keys of mixed or unsupported types, or a non-tensor non-list.
            ShapeError: A key tensor that is not 1-D, or turns of another length.
            DtypeError: A key tensor that does not hold integers.

        Example:
            >>> s = NoiseSchedule(0.0, 0.5, 203)
            >>> a = s.draw_noisy(100, keys=torch.arange(8), turns=1, seed=42)
            >>> b = s.draw_noisy(100, keys=torch.arange(8).flip(0), turns=1, seed=42)
            >>> bool((a == b.flip(0)).all())
            True
        """
        if isinstance(turns, np.ndarray):
            turns = torch.from_numpy(np.ascontiguousarray(turns).astype(np.int64, copy=False))
        return self._core.draw_noisy(step, _as_keys(keys), turns, seed, path)

    def plot(self, ax: Axes | None = None, *, label: str | None = None) -> Axes:
        """Plots ``p(step)`` for steps 0 .. ``1.1 * total_steps`` (needs matplotlib).

        Args:
            ax: Axes to draw on; a new figure when None.
            label: Legend label (default: the schedule's repr).

        Returns:
            The axes drawn on.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        steps = torch.arange(int(self.total_steps * 1.1) + 1)
        ax.plot(steps.numpy(), self.probabilities(steps).numpy(), label=label or repr(self))
        ax.set_xlabel("training step")
        ax.set_ylabel("P(noisy documents)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        return ax

    def __repr__(self) -> str:
        return repr(self._core)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NoiseSchedule):
            return NotImplemented
        return repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))
