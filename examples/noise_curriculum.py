"""ZeroSearch's noise curriculum: the four schedule shapes, and reproducible per-call draws.

Run:  python examples/noise_curriculum.py [--out noise_schedule.png]

Prints the paper's example values, checks that the draws are reproducible and that their
frequency follows the curve, and saves a plot of the curves with the measured frequencies.
"""

from __future__ import annotations

import argparse

import torch

import r1kit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="noise_schedule.png", help="where to save the plot")
    parser.add_argument("--total-steps", type=int, default=203)
    args = parser.parse_args()
    m = args.total_steps

    paper = r1kit.NoiseSchedule(start=0.0, end=0.5, total_steps=m)  # ZeroSearch: base 4
    print(paper)
    for step in (1, 25, 50, 100, 150, 200, m - 1, m):
        print(f"  p({step:>3}) = {paper.probability(step):.4f}")

    # 512 rollouts x 3 search turns per step; keys are the rollouts' uids.
    uids = [f"prompt-{i // 8}/sample-{i % 8}" for i in range(512)]
    keys = torch.tensor([r1kit.curriculum.hash_key(u) for u in uids]).repeat_interleave(3)
    turns = torch.arange(3).repeat(512)
    steps = list(range(0, int(m * 1.1), 5))
    measured = [paper.draw_noisy(s, keys, turns=turns, seed=7).float().mean().item() for s in steps]
    again = paper.draw_noisy(100, keys, turns=turns, seed=7)
    assert torch.equal(again, paper.draw_noisy(100, keys, turns=turns, seed=7))
    print(f"step 100: {int(again.sum())} of {again.numel()} search calls noisy (reproducible)")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    paper.plot(ax, label="exponential, base 4 (ZeroSearch)")
    r1kit.NoiseSchedule(0.0, 0.5, m, base=16.0).plot(ax, label="exponential, base 16")
    r1kit.NoiseSchedule(0.0, 0.5, m, kind="linear").plot(ax, label="linear (= base 1)")
    r1kit.NoiseSchedule(0.0, 0.5, m, kind="cosine").plot(ax, label="cosine")
    ax.scatter(steps, measured, s=8, color="black", label="drawn frequency (base 4, 1536 calls)")
    ax.set_ylim(-0.02, 0.6)
    ax.legend(fontsize="small")
    ax.set_title("Probability that a simulated search returns noisy documents")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
