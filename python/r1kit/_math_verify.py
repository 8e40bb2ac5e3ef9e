"""The optional HF math-verify fallback of :func:`r1kit.rewards.math_scores`.

math-verify bounds its sympy work with ``signal.alarm``, which only works in a main thread: called
from a trainer's worker thread it fails or hangs. Here it runs in a pool of spawned processes,
each sample as one task in a worker's main thread, with math-verify's own timeout inside and a
hard deadline outside (a worker that overruns it is killed and the pool replaced).
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.pool
import os
import threading
from collections.abc import Sequence

from r1kit.errors import ArgumentError

_lock = threading.Lock()
_pool: multiprocessing.pool.Pool | None = None

Job = tuple[str | None, str | None, list[str]]
"""(extracted answer or None, whole response when no answer was extracted, golds)."""


def available() -> bool:
    """True when math-verify can be imported."""
    try:
        import math_verify  # noqa: F401
    except ImportError:
        return False
    return True


def _verify_one(job: Job, timeout: int) -> bool:
    """Runs in a pool worker's main thread (signals allowed there)."""
    from math_verify import parse, verify

    answer, text, golds = job
    try:
        pred = parse(f"\\boxed{{{answer}}}" if answer is not None else (text or ""), parsing_timeout=timeout)
        if not pred:
            return False
        for gold in golds:
            g = parse(f"\\boxed{{{gold}}}", parsing_timeout=timeout)
            if g and verify(g, pred, timeout_seconds=timeout):
                return True
    except Exception:
        return False
    return False


def _get_pool() -> multiprocessing.pool.Pool:
    global _pool
    with _lock:
        if _pool is None:
            workers = max(1, min(4, os.cpu_count() or 1))
            _pool = multiprocessing.get_context("spawn").Pool(workers)
        return _pool


def _drop_pool() -> None:
    global _pool
    with _lock:
        if _pool is not None:
            _pool.terminate()
            _pool = None


atexit.register(_drop_pool)


def verify_batch(jobs: Sequence[Job], timeout: float) -> list[bool]:
    """math-verify's verdict per job; a job past its deadline counts as not equal."""
    if not available():
        raise ArgumentError(
            "`fallback`: expected math-verify to be installed for fallback='math_verify' "
            "(pip install math-verify), got ImportError"
        )
    if not timeout > 0:
        raise ArgumentError(f"`timeout`: expected a positive number of seconds, got {timeout}")
    inner = max(1, int(timeout))
    pool = _get_pool()
    pending = [pool.apply_async(_verify_one, (job, inner)) for job in jobs]
    out: list[bool] = []
    overran = False
    for p in pending:
        # Each sample gets its own deadline, counted from when we start waiting for it.
        try:
            out.append(bool(p.get(timeout=3 * timeout + 5)))
        except multiprocessing.TimeoutError:
            out.append(False)
            overran = True
        except Exception:
            out.append(False)
    if overran:
        _drop_pool()
    return out
