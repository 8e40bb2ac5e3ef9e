"""ZeroSearch noise draws: r1kit's keyed draws against what the reference code does.

The reference draws ``random.random() < p`` once per search call in a Python loop. A seeded
``random.Random`` loop is the plain-Python equivalent that can at least be repeated; a
``torch.rand`` comparison shows the cost of one vectorised draw with no per-key determinism.
"""

from __future__ import annotations

import random

import torch

from benches.harness import Case
from r1kit import NoiseSchedule

N_KEYS = 1_000_000
STEP = 100


def cases() -> list[Case]:
    schedule = NoiseSchedule(0.0, 0.5, 203)
    p = schedule.probability(STEP)
    keys = torch.arange(N_KEYS)
    uids = [f"uid-{i}" for i in range(N_KEYS)]

    def python_random_loop() -> list[bool]:
        rng = random.Random(0)
        return [rng.random() < p for _ in range(N_KEYS)]

    def torch_rand() -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        return torch.rand(N_KEYS, generator=g) < p

    def check() -> None:
        freq = schedule.draw_noisy(STEP, keys).double().mean().item()
        base = sum(python_random_loop()) / N_KEYS
        assert abs(freq - p) < 0.003 and abs(base - p) < 0.003, (freq, base, p)

    return [
        Case(
            name="draw_noisy, 1M int keys (tensor)",
            r1kit=lambda: schedule.draw_noisy(STEP, keys, turns=0, seed=0),
            baselines={
                "python random.Random loop": python_random_loop,
                "torch.rand < p": torch_rand,
            },
            check=check,
        ),
        Case(
            name="draw_noisy, 1M str keys (list of uids)",
            r1kit=lambda: schedule.draw_noisy(STEP, uids, turns=0, seed=0),
            baselines={"python random.Random loop": python_random_loop},
        ),
        Case(
            name="draw_noisy, 1M int keys, device path (tch ops) on CPU",
            r1kit=lambda: schedule.draw_noisy(STEP, keys, seed=0, path="device"),
            baselines={"python random.Random loop": python_random_loop},
        ),
    ]
