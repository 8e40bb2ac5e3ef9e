"""r1kit's exception hierarchy.

Every error r1kit raises is an :class:`R1KitError`. Each subclass also inherits the builtin a
Python user would expect, so ``except ValueError`` keeps working::

    >>> import r1kit
    >>> try:
    ...     r1kit.NoiseSchedule(0.0, 1.5, 100)
    ... except ValueError as e:
    ...     print(type(e).__name__, e)
    ArgumentError `end`: expected a probability in [0, 1], got 1.5

The Rust core raises these classes by name (``src/python/errors.rs``); keep the two in step.
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "DeviceError",
    "DtypeError",
    "R1KitError",
    "ShapeError",
    "StructureError",
    "TorchError",
]


class R1KitError(Exception):
    """Base class of every error raised by r1kit."""


class ArgumentError(R1KitError, ValueError):
    """An argument's value is outside its domain (negative step, probability above 1, ...)."""


class ArgumentTypeError(R1KitError, TypeError):
    """An argument is the wrong kind of object (not a tensor, keys of mixed types, ...)."""


class ShapeError(R1KitError, ValueError):
    """A tensor has the wrong number of dimensions or the wrong sizes."""


class DtypeError(R1KitError, TypeError):
    """A tensor has the wrong element type."""


class DeviceError(R1KitError, ValueError):
    """Tensors are on the wrong device, or on different devices."""


class StructureError(R1KitError, ValueError):
    """A token sequence is not well formed (parallel-thinking tags)."""


class TorchError(R1KitError, RuntimeError):
    """libtorch refused an operation (out of memory, an unsupported op on this device, ...)."""
