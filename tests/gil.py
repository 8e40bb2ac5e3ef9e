"""Proof that a call releases the GIL: two calls, from two threads, overlap in time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def intervals_overlap(fn: Callable[[], object]) -> bool:
    """Runs fn in a thread and, once that thread is inside fn, again in this thread.

    This thread wakes from its short sleep only when it can take the GIL: if fn held the GIL for
    its native work, the second call would start after the first ended and the two
    [start, end] intervals would not overlap.
    """
    spans: dict[str, tuple[float, float]] = {}
    entering = threading.Event()

    def timed(name: str) -> None:
        start = time.perf_counter()
        fn()
        spans[name] = (start, time.perf_counter())

    def first() -> None:
        entering.set()
        timed("first")

    worker = threading.Thread(target=first)
    worker.start()
    entering.wait()
    time.sleep(0.02)
    timed("second")
    worker.join()
    (a0, a1), (b0, b1) = spans["first"], spans["second"]
    return a0 < b1 and b0 < a1
