"""Tiny benchmark harness: r1kit against today's baselines, in the same process, medians.

Each ``benches/bench_*.py`` module defines ``cases() -> list[Case]``. ``benches/run.py`` times
every implementation of every case, prints a table of medians and speed-up ratios
(baseline median / r1kit median), and writes the rows as JSON to ``bench-results/``.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class Case:
    """One workload, timed for r1kit and for each baseline on identical inputs."""

    name: str
    r1kit: Callable[[], object]
    baselines: dict[str, Callable[[], object]]
    # Run once before timing: asserts that r1kit and the baselines agree where they should.
    check: Callable[[], None] | None = None
    notes: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    # The memory-bandwidth limit: the tensors the work reads (cloned to measure the machine's copy
    # bandwidth in the same run) and the bytes it must move at least (reads + writes).
    inputs: list[torch.Tensor] = field(default_factory=list)
    traffic_bytes: int = 0


def nbytes(*tensors: torch.Tensor) -> int:
    """Bytes held by ``tensors``."""
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class Bandwidth:
    """What the memory system allows for a case, measured in the same run.

    ``clone_gb_s``: a ``torch.clone`` of the inputs (allocation and first-touch page faults
    included, as for any fresh output). ``copy_gb_s``: ``copy_`` into buffers allocated once (the
    streaming bandwidth). The limit uses the faster of the two, so "% of limit" is conservative.
    """

    clone_gb_s: float
    copy_gb_s: float
    traffic_mb: float
    limit_s: float


def bandwidth(case: Case, *, min_runs: int, min_time_s: float) -> Bandwidth | None:
    """Copy bandwidths over the case's inputs and the time its traffic takes at the faster one."""
    if not case.inputs or not case.traffic_bytes:
        return None
    moved = 2 * nbytes(*case.inputs)  # a copy reads and writes every byte
    clone = measure(
        lambda: [t.clone() for t in case.inputs], min_runs=min_runs, min_time_s=min_time_s
    )
    buffers = [torch.empty_like(t) for t in case.inputs]

    def copy() -> None:
        for dst, src in zip(buffers, case.inputs, strict=True):
            dst.copy_(src)

    steady = measure(copy, min_runs=min_runs, min_time_s=min_time_s)
    rate = max(moved / clone.median_s, moved / steady.median_s)
    return Bandwidth(
        moved / clone.median_s / 1e9,
        moved / steady.median_s / 1e9,
        case.traffic_bytes / 1e6,
        case.traffic_bytes / rate,
    )


@dataclass
class Timing:
    case: str
    implementation: str
    median_s: float
    runs: int


def measure(fn: Callable[[], object], *, min_runs: int = 5, min_time_s: float = 1.0) -> Timing:
    """Median wall time of ``fn`` over at least ``min_runs`` runs and ``min_time_s`` seconds."""
    fn()  # warm-up: first-call allocations, lazy pools, caches
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < min_runs or time.perf_counter() - start < min_time_s:
        gc.disable()
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
        gc.enable()
        if len(samples) >= 1000:
            break
    return Timing("", "", statistics.median(samples), len(samples))


def measure_interleaved(
    fns: list[Callable[[], object]], *, min_runs: int = 5, min_time_s: float = 1.0
) -> list[Timing]:
    """Medians of several functions timed in rounds: one call of each per round.

    Every implementation then samples the same stretch of machine conditions (on a shared VM
    the memory bandwidth drifts between regimes over fractions of a second, and timing one
    implementation after the other lets each land in a different one), and each call starts
    from the caches another implementation left, as calls in a training step do. Stops after
    ``min_runs`` rounds and ``min_time_s`` seconds per implementation, or 1000 rounds.
    """
    for fn in fns:
        fn()  # warm-up
    samples: list[list[float]] = [[] for _ in fns]
    start = time.perf_counter()
    budget = min_time_s * len(fns)
    rounds = 0
    while rounds < min_runs or time.perf_counter() - start < budget:
        for fn, out in zip(fns, samples, strict=True):
            gc.disable()
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
            gc.enable()
        rounds += 1
        if rounds >= 1000:
            break
    return [Timing("", "", statistics.median(s), len(s)) for s in samples]


def run_case(
    case: Case, *, min_runs: int, min_time_s: float, interleave: bool = False
) -> list[Timing]:
    """Times r1kit and every baseline of ``case``: one after the other (each for ``min_time_s``),
    or with ``interleave`` in rounds (see :func:`measure_interleaved`)."""
    if case.check is not None:
        case.check()
    impls = [("r1kit", case.r1kit), *case.baselines.items()]
    if interleave:
        rows = measure_interleaved(
            [fn for _, fn in impls], min_runs=min_runs, min_time_s=min_time_s
        )
    else:
        rows = [measure(fn, min_runs=min_runs, min_time_s=min_time_s) for _, fn in impls]
    for t, (name, _) in zip(rows, impls, strict=True):
        t.case, t.implementation = case.name, name
    return rows


def format_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"
