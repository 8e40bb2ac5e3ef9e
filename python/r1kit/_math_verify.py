"""The optional HF math-verify fallback of :func:`r1kit.rewards.math_scores`.

math-verify bounds its sympy work with ``signal.alarm``, which only works in a main thread: called
from a trainer's worker thread it fails or hangs. Here it runs in a few worker processes (plain
``python -c`` children: they import math-verify only, not torch, and do not re-run the caller's
``__main__`` the way multiprocessing's spawn does), one sample at a time in each worker's main
thread, with math-verify's own timeout inside and a hard deadline outside: a worker that overruns
it is killed and replaced, and its sample counts as not equal.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from r1kit.errors import ArgumentError

Job = tuple[str | None, str | None, list[str]]
"""(extracted answer or None, whole response when no answer was extracted, golds)."""

_WORKER = r"""
import json, sys
from math_verify import parse, verify

def judge(answer, text, golds, timeout):
    pred = parse("\\boxed{%s}" % answer if answer is not None else (text or ""),
                 parsing_timeout=timeout)
    if not pred:
        return False
    for gold in golds:
        g = parse("\\boxed{%s}" % gold, parsing_timeout=timeout)
        if g and verify(g, pred, timeout_seconds=timeout):
            return True
    return False

for line in sys.stdin:
    answer, text, golds, timeout = json.loads(line)
    try:
        ok = judge(answer, text, golds, timeout)
    except BaseException:
        ok = False
    sys.stdout.write("1\n" if ok else "0\n")
    sys.stdout.flush()
"""

_lock = threading.Lock()
_workers: list[subprocess.Popen[str]] = []


def available() -> bool:
    """True when math-verify is installed (checked without importing it here)."""
    return importlib.util.find_spec("math_verify") is not None


def _start() -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WORKER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        bufsize=1,
    )


def _kill(p: subprocess.Popen[str]) -> None:
    p.kill()
    p.wait()


@atexit.register
def _shutdown() -> None:
    with _lock:
        for p in _workers:
            _kill(p)
        _workers.clear()


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
    # The outer deadline also covers a fresh worker's import of math-verify and sympy.
    hard = 3 * timeout + 10
    results = [False] * len(jobs)
    with _lock:
        want = max(1, min(2, os.cpu_count() or 1, len(jobs)))
        while len(_workers) < want:
            _workers.append(_start())
        todo = list(range(len(jobs)))
        todo.reverse()
        busy: dict[int, tuple[int, float]] = {}  # worker slot -> (job, deadline)
        with selectors.DefaultSelector() as sel:
            while todo or busy:
                for slot in range(len(_workers)):
                    if slot in busy or not todo:
                        continue
                    i = todo.pop()
                    answer, text, golds = jobs[i]
                    p = _workers[slot]
                    try:
                        assert p.stdin is not None and p.stdout is not None
                        p.stdin.write(json.dumps([answer, text, golds, inner]) + "\n")
                        p.stdin.flush()
                    except (OSError, ValueError):  # a dead worker: replace it, retry the job
                        _kill(p)
                        _workers[slot] = _start()
                        todo.append(i)
                        continue
                    busy[slot] = (i, time.monotonic() + hard)
                    sel.register(p.stdout, selectors.EVENT_READ, slot)
                if not busy:
                    continue
                wait = max(0.0, min(d for _, d in busy.values()) - time.monotonic())
                for key, _ in sel.select(timeout=wait):
                    done: int = key.data
                    i, _ = busy.pop(done)
                    sel.unregister(key.fileobj)
                    out = _workers[done].stdout
                    line = out.readline() if out is not None else ""
                    results[i] = line.strip() == "1"
                    if not line:  # the worker died on this job
                        _kill(_workers[done])
                        _workers[done] = _start()
                now = time.monotonic()
                for slot, (_i, deadline) in list(busy.items()):
                    if now > deadline:
                        busy.pop(slot)
                        stuck = _workers[slot].stdout
                        if stuck is not None:
                            sel.unregister(stuck)
                        _kill(_workers[slot])
                        _workers[slot] = _start()
    return results
