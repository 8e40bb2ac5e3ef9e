"""RL math: r1kit against verl 0.9.1's core_algos (the functions verl users call today)."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import torch

from benches.harness import Case
from r1kit import rl

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from verl.trainer.ppo import core_algos as verl


def _mask(b: int, t: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(t // 4, t + 1, (b,), generator=g)
    return (torch.arange(t)[None, :] < lengths[:, None]).float()


def cases() -> list[Case]:
    torch.manual_seed(0)
    b, t = 256, 2048
    m = _mask(b, t, 1)
    r = torch.randn(b, t) * m
    v = torch.randn(b, t)

    bg, tg = 4096, 1024
    mg = _mask(bg, tg, 2)
    rg = torch.zeros(bg, tg)
    last = mg.sum(1).long().clamp(min=1) - 1
    rg[torch.arange(bg), last] = torch.randint(0, 2, (bg,)).float()
    uids = np.array([f"uid-{i // 16}" for i in range(bg)], dtype=object)
    gids = torch.arange(bg) // 16

    def close(a: torch.Tensor, b_: torch.Tensor) -> None:
        torch.testing.assert_close(a, b_, rtol=1e-5, atol=1e-6)

    return [
        Case(
            name=f"gae B={b} T={t}",
            r1kit=lambda: rl.gae(r, v, m, 0.99, 0.95),
            baselines={
                "verl compute_gae_advantage_return": lambda: verl.compute_gae_advantage_return(
                    r, v, m, 0.99, 0.95
                )
            },
            check=lambda: close(
                rl.gae(r, v, m, 0.99, 0.95)[0],
                verl.compute_gae_advantage_return(r, v, m, 0.99, 0.95)[0],
            ),
        ),
        Case(
            name=f"reinforce_plus_plus B={b} T={t}",
            r1kit=lambda: rl.reinforce_plus_plus(r, m, 1.0),
            baselines={
                "verl reinforce_plus_plus": lambda: (
                    verl.compute_reinforce_plus_plus_outcome_advantage(
                        r, m, config=SimpleNamespace(gamma=1.0)
                    )
                )
            },
        ),
        Case(
            name=f"grpo B={bg} (256 groups of 16) T={tg}, uid strings",
            r1kit=lambda: rl.grpo(rg, mg, uids),
            baselines={
                "verl grpo (loop)": lambda: verl.compute_grpo_outcome_advantage(rg, mg, uids),
                "verl grpo_vectorized": lambda: verl.compute_grpo_vectorized_outcome_advantage(
                    rg, mg, uids
                ),
            },
            check=lambda: close(
                rl.grpo(rg, mg, uids)[0], verl.compute_grpo_outcome_advantage(rg, mg, uids)[0]
            ),
        ),
        Case(
            name=f"grpo B={bg} T={tg}, int64 group ids",
            r1kit=lambda: rl.grpo(rg, mg, gids),
            baselines={
                "verl grpo_vectorized": lambda: verl.compute_grpo_vectorized_outcome_advantage(
                    rg, mg, uids
                )
            },
        ),
        Case(
            name=f"rloo B={bg} T={tg}, uid strings",
            r1kit=lambda: rl.rloo(rg, mg, uids),
            baselines={
                "verl rloo (loop)": lambda: verl.compute_rloo_outcome_advantage(rg, mg, uids),
                "verl rloo_vectorized": lambda: verl.compute_rloo_vectorized_outcome_advantage(
                    rg, mg, uids
                ),
            },
        ),
    ]
