"""RL math: r1kit against verl 0.9.1's core_algos (the functions verl users call today)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import torch

from benches.harness import Case, nbytes
from r1kit import rl

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from verl.trainer.ppo import core_algos as verl
    from verl.workers.config import ActorConfig


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
            inputs=[r, v, m],
            # read r, v, m; write advantages and returns; whitening re-reads and rewrites A
            traffic_bytes=7 * nbytes(r),
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
            inputs=[r, m],
            traffic_bytes=5 * nbytes(r),  # read r, m; write returns; re-read; write advantages
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
            inputs=[rg, mg],
            traffic_bytes=3 * nbytes(rg),  # read rewards and mask, write one advantage tensor
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
            inputs=[rg, mg],
            traffic_bytes=3 * nbytes(rg),
        ),
        *loss_cases(),
    ]


def loss_cases() -> list[Case]:
    """KL penalty and the vanilla policy loss at 4096 x 1024 (forward + backward)."""
    b, t = 4096, 1024
    g = torch.Generator().manual_seed(3)
    old = -torch.rand(b, t, generator=g) * 3
    ref = old + torch.randn(b, t, generator=g) * 0.3
    adv = torch.randn(b, t, generator=g)
    m = _mask(b, t, 4)
    lp = (old + torch.randn(b, t, generator=g) * 0.2).requires_grad_(True)
    cfg = ActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio=0.2,
        clip_ratio_low=0.2,
        clip_ratio_high=0.28,
        clip_ratio_c=3.0,
    )
    vanilla = verl.get_policy_loss_fn("vanilla")

    def ours() -> torch.Tensor:
        loss, _ = rl.policy_loss("vanilla", old, lp, adv, m, 0.2, 0.28, 3.0)
        return torch.autograd.grad(loss, lp)[0]

    def theirs() -> torch.Tensor:
        loss, _ = vanilla(old, lp, adv, m, loss_agg_mode="token-mean", config=cfg)
        return torch.autograd.grad(loss, lp)[0]

    def check() -> None:
        torch.testing.assert_close(ours(), theirs(), rtol=1e-5, atol=1e-6)

    lpd = lp.detach()
    return [
        Case(
            name=f"kl_penalty(low_var_kl) {b}x{t}",
            r1kit=lambda: rl.kl_penalty(lpd, ref, "low_var_kl"),
            baselines={"verl kl_penalty": lambda: verl.kl_penalty(lpd, ref, "low_var_kl")},
            check=lambda: torch.testing.assert_close(
                rl.kl_penalty(lpd, ref, "low_var_kl"), verl.kl_penalty(lpd, ref, "low_var_kl")
            ),
            inputs=[lpd, ref],
            traffic_bytes=3 * nbytes(lpd),
        ),
        Case(
            name=f"vanilla policy_loss forward+backward {b}x{t} (token-mean)",
            r1kit=ours,
            baselines={"verl compute_policy_loss_vanilla + agg_loss": theirs},
            check=check,
            inputs=[old, lpd, adv, m],
            # forward reads 4 tensors; backward reads them again and writes the gradient
            traffic_bytes=9 * nbytes(lpd),
        ),
        *masked_cases(lpd, m),
    ]


def masked_cases(x: torch.Tensor, m: torch.Tensor) -> list[Case]:
    """The masked reductions every loss and whitening step calls, against verl's torch versions."""
    from verl.utils import torch_functional as verl_f

    b, t = x.shape

    def close(a: torch.Tensor, b_: torch.Tensor) -> None:
        torch.testing.assert_close(a, b_, rtol=1e-5, atol=1e-6)

    def case(
        name: str,
        ours: Callable[[], torch.Tensor],
        theirs: Callable[[], torch.Tensor],
        reads: int,
        writes: int = 0,
    ) -> Case:
        return Case(
            name=f"{name} {b}x{t}",
            r1kit=ours,
            baselines={f"verl {name}": theirs},
            check=lambda: close(ours(), theirs()),
            inputs=[x, m],
            traffic_bytes=(reads + writes) * nbytes(x),
        )

    return [
        case("masked_mean", lambda: rl.masked_mean(x, m), lambda: verl_f.masked_mean(x, m), 2),
        case("masked_var", lambda: rl.masked_var(x, m), lambda: verl_f.masked_var(x, m), 2),
        # two reads for the moments, one more for the output pass, one write
        case(
            "masked_whiten",
            lambda: rl.masked_whiten(x, m),
            lambda: verl_f.masked_whiten(x, m),
            4,
            1,
        ),
        case(
            "agg_loss(seq-mean-token-mean)",
            lambda: rl.agg_loss(x, m, "seq-mean-token-mean"),
            lambda: verl.agg_loss(x, m, "seq-mean-token-mean"),
            2,
        ),
    ]
