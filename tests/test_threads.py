"""r1kit's thread pool: R1KIT_NUM_THREADS, set_num_threads, and survival across fork."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import r1kit
from gil import intervals_overlap


def run_python(code: str, **env: str) -> str:
    full_env = {**os.environ, **env}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout.strip()


def test_env_sets_pool_size() -> None:
    assert run_python("import r1kit; print(r1kit.get_num_threads())", R1KIT_NUM_THREADS="3") == "3"
    assert run_python("import r1kit; print(r1kit.get_num_threads())", R1KIT_NUM_THREADS="1") == "1"


def test_set_num_threads(restore_threads: None) -> None:
    r1kit.set_num_threads(3)
    assert r1kit.get_num_threads() == 3
    with pytest.raises(r1kit.ArgumentError, match="`n`"):
        r1kit.set_num_threads(0)
    with pytest.raises(r1kit.ArgumentTypeError, match="`n`"):
        r1kit.set_num_threads(1.5)  # type: ignore[arg-type]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_pool_survives_fork(restore_threads: None) -> None:
    s = r1kit.NoiseSchedule(0.0, 0.5, 203)
    keys = torch.arange(300_000)
    r1kit.set_num_threads(2)
    before = s.draw_noisy(150, keys, seed=4)  # the parent's pool is now running
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not hang on the parent's (absent) worker threads
        # (no torch ops here: libgomp, torch's OpenMP, is itself not fork-safe)
        status = 1
        try:
            os.close(read_fd)
            child = s.draw_noisy(150, keys, seed=4).numpy().tobytes()
            threads = r1kit.get_num_threads()
            r1kit.set_num_threads(2)
            again = s.draw_noisy(150, keys, seed=4).numpy().tobytes()
            os.write(write_fd, bytes([threads]) + child + again)
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 1 << 20):
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    message = b"".join(chunks)
    n = keys.numel()
    assert message[0] == 1  # a forked child starts single-threaded
    assert message[1 : 1 + n] == before.numpy().tobytes()
    assert message[1 + n :] == before.numpy().tobytes()
    # and the parent keeps working with its own pool
    assert torch.equal(s.draw_noisy(150, keys, seed=4), before)
    assert r1kit.get_num_threads() == 2


def test_dataloader_workers_use_r1kit() -> None:
    code = """
        import torch, r1kit
        from torch.utils.data import DataLoader, Dataset
        s = r1kit.NoiseSchedule(0.0, 0.5, 203)
        parent = s.draw_noisy(100, torch.arange(4000), seed=1)  # warms the pool before forking

        class Draws(Dataset):
            def __len__(self): return 4
            def __getitem__(self, i):
                return s.draw_noisy(100, torch.arange(i * 1000, (i + 1) * 1000), seed=1)

        loader = DataLoader(Draws(), batch_size=None, num_workers=2,
                            multiprocessing_context="fork")
        workers = torch.cat(list(loader))
        print(torch.equal(workers, parent))
    """
    assert run_python(code) == "True"


def test_gil_is_released_during_draws(restore_threads: None) -> None:
    """Another Python thread runs r1kit while a first call is still drawing.

    If the call held the GIL, the second call could only start after the first ended (a
    counter thread would not do: a GIL switch just before the call lets it count anyway).
    """
    r1kit.set_num_threads(1)
    s = r1kit.NoiseSchedule(0.0, 0.5, 203)
    keys = torch.arange(20_000_000)
    assert intervals_overlap(lambda: s.draw_noisy(150, keys))
