"""End-to-end recipes: ``parallel_r1`` (SFT cold start, then two GRPO stages).

``parallel_r1`` follows Parallel-R1 (arXiv 2509.07980) on the embedded synthetic data:

1. SFT cold start on parallel traces of easy problems (:func:`r1kit.train.data.easy_arithmetic`);
2. GRPO on easy problems with the ``gsm8k_stage`` reward (1 if correct, parallel and valid);
3. GRPO on hard problems (:func:`r1kit.train.data.hard_arithmetic`) with the ``alternating``
   reward (accuracy for 8 steps of every 10, then a bonus for correct parallel answers).

After each stage the model answers held-out problems it never trained on (greedy decoding); the
run writes ``metrics.jsonl`` (one line per step), ``report.md`` (held-out accuracy and
parallel-format ratio per stage), ``results.json``, ``curves.png`` and a checkpoint per stage under
``runs/<name>/``. The ``zerosearch`` recipe (search RL with the noise curriculum) lives in
:mod:`r1kit.train.zerosearch` and is registered here.

Example:
    >>> sorted(RECIPES)
    ['parallel_r1', 'zerosearch']
    >>> get_recipe("parallel-r1") is run_parallel_r1
    True
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from r1kit.errors import ArgumentError
from r1kit.structure import ParallelTags
from r1kit.train.core import evaluate
from r1kit.train.data import Example, easy_arithmetic, hard_arithmetic
from r1kit.train.grpo import GRPOConfig, grpo_train
from r1kit.train.model import PARALLEL_TAGS
from r1kit.train.plots import plot_metrics
from r1kit.train.runs import (
    RecipeConfig,
    finish_stage,
    load_stage_model,
    model_and_tokenizer,
    open_run,
    pct,
    split_held_out,
)
from r1kit.train.sft import SFTConfig, sft_train
from r1kit.train.zerosearch import ZeroSearchConfig, run_zerosearch

__all__ = [
    "CONFIGS",
    "RECIPES",
    "ParallelR1Config",
    "get_recipe",
    "recipe_name",
    "run_parallel_r1",
]


@dataclass
class ParallelR1Config(RecipeConfig):
    """Settings of :func:`run_parallel_r1` (defaults: the demo, a few minutes on 2 CPU cores).

    Attributes:
        name: Run name (the output folder under ``runs/``).
        seed: Seed of the data, the model and every stage.
        hidden_size, num_layers, num_heads: The tiny Qwen2's size.
        structured: Structured (Unseen) layout in every stage; False: causal (Seen).
        n_easy_train, n_hard_train: Training examples drawn per set.
        n_eval: Held-out hard problems (never in any training set).
        n_eval_easy: Easy prompts held out of every training set (of the 300 there are).
        max_new_tokens: Response cap in rollouts and evaluation.
        max_paths: Path cap of a parallel block while sampling.
        sft_steps, sft_batch_size, sft_lr: Stage 1.
        stage2_steps, stage3_steps: GRPO steps of stages 2 and 3.
        prompts_per_step, group_size, rl_lr, kl_coef, temperature: GRPO settings of both stages.
        threads: ``torch.set_num_threads`` for the run (0: leave torch's default; 1 is the
            fastest for the tiny model, and robust on a loaded machine).
        progress: Show tqdm bars.
        resume: Continue a run: stages whose checkpoint is complete are loaded, not rerun
            (each stage seeds its own randomness, so the result equals an uninterrupted run).
    """

    name: str = "parallel-r1"
    seed: int = 0
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    structured: bool = True
    n_easy_train: int = 4000
    n_hard_train: int = 4000
    n_eval: int = 200
    n_eval_easy: int = 60
    max_new_tokens: int = 48
    max_paths: int = 4
    sft_steps: int = 500
    sft_batch_size: int = 32
    sft_lr: float = 2e-3
    stage2_steps: int = 30
    stage3_steps: int = 150
    prompts_per_step: int = 8
    group_size: int = 16
    rl_lr: float = 3e-4
    kl_coef: float = 0.0
    temperature: float = 1.0
    threads: int = 1
    progress: bool = True
    resume: bool = False


def _held_out(
    make: Callable[[int, int], list[Example]], n: int, seed: int, exclude: set[str]
) -> list[Example]:
    out: list[Example] = []
    seen = set(exclude)
    for ex in make(n * 50, seed):
        if ex.prompt not in seen:
            seen.add(ex.prompt)
            out.append(ex)
        if len(out) == n:
            return out
    raise ArgumentError(f"`n_eval`: could not find {n} held-out problems outside the training set")


def _split_easy(n_train: int, n_eval: int, seed: int) -> tuple[list[Example], list[Example]]:
    # Easy problems are few (10 x 10 x 3 prompts): hold some prompts out entirely.
    pool = easy_arithmetic(n_train + 50 * n_eval, seed)
    prompts = sorted({e.prompt for e in pool})
    rng = torch.Generator().manual_seed(seed)
    held = {prompts[i] for i in torch.randperm(len(prompts), generator=rng)[:n_eval].tolist()}
    train = [e for e in pool if e.prompt not in held][:n_train]
    evals: dict[str, Example] = {}
    for e in pool:
        if e.prompt in held:
            evals.setdefault(e.prompt, e)
    return train, sorted(evals.values(), key=lambda e: e.prompt)


def run_parallel_r1(
    config: ParallelR1Config | None = None,
    out_dir: str | Path = "runs",
    *,
    model: Any | None = None,
    tokenizer: Any | None = None,
    data: Sequence[Example] | None = None,
) -> dict[str, Any]:
    """Runs the three Parallel-R1 stages and writes the run folder.

    By default on the synthetic data with the tiny model. With ``model`` and ``tokenizer`` (a
    Hugging Face causal LM; the tags are added to the tokenizer if missing, see
    :func:`r1kit.train.model.add_tag_tokens`) and ``data``: ``n_eval`` rows (after a seeded
    shuffle) are held out, stage 1 trains on the other rows that have a ``response``, and stages
    2 and 3 on all other rows; the same code path as the demo.

    Args:
        config: The settings (default: the demo's).
        out_dir: Parent folder; the run goes to ``out_dir/<config.name>/`` (replacing its
            ``metrics.jsonl``).
        model: A causal LM to train instead of the tiny one (needs ``tokenizer``).
        tokenizer: Its tokenizer.
        data: Examples to use instead of the synthetic sets.

    Returns:
        ``{"stages": [...], "path": ..., "seconds": ...}``: per stage its held-out ``easy`` and
        ``hard`` results (``accuracy``, ``parallel_ratio``, ...) and its duration.
    """
    cfg = config or ParallelR1Config()
    previous = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if (model is None) != (tokenizer is None):
        raise ArgumentError("`tokenizer`: pass model and tokenizer together")
    try:
        return _run_parallel_r1(cfg, Path(out_dir) / cfg.name, model, tokenizer, data)
    finally:
        torch.set_num_threads(previous)


STAGES = ("stage1_sft", "stage2_grpo_easy", "stage3_grpo_hard")
"""The recipe's stages, in order (also the checkpoint folder names)."""


def _run_parallel_r1(
    cfg: ParallelR1Config,
    run: Path,
    model: Any | None,
    tok: Any | None,
    data: Sequence[Example] | None,
) -> dict[str, Any]:
    log, done, stages = open_run(run, STAGES, cfg.resume)
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)

    model, tok = model_and_tokenizer(cfg, model, tok, PARALLEL_TAGS)
    tags = ParallelTags.from_tokenizer(tok)
    eval_sets: list[tuple[str, list[Example]]]
    if data is None:
        easy_train, easy_eval = _split_easy(cfg.n_easy_train, cfg.n_eval_easy, cfg.seed)
        hard_train = hard_arithmetic(cfg.n_hard_train, seed=cfg.seed + 1)
        hard_eval = _held_out(
            lambda n, s: hard_arithmetic(n, seed=s),
            cfg.n_eval,
            cfg.seed + 2,
            {e.prompt for e in hard_train},
        )
        eval_sets = [("easy", easy_eval), ("hard", hard_eval)]
    else:
        held, hard_train = split_held_out(data, cfg.n_eval, cfg.seed)
        easy_train = [e for e in hard_train if e.response]
        if not easy_train:
            raise ArgumentError("`data`: stage 1 (SFT) needs rows with a 'response' field")
        eval_sets = [("held_out", held)]

    if done:
        model = load_stage_model(run, done[-1])

    def finish(stage: str, t0: float) -> None:
        result: dict[str, Any] = {"stage": stage, "seconds": round(time.perf_counter() - t0, 1)}
        for label, held_out in eval_sets:
            result[label] = evaluate(
                model, tok, held_out, tags, cfg.max_new_tokens, structured=cfg.structured
            )
        stages.append(result)
        log.write({"stage": stage, "eval": True, **{k: result[k] for k, _ in eval_sets}})
        finish_stage(run, stage, model, tok, result)

    t0 = time.perf_counter()
    sft_cfg = SFTConfig(
        steps=cfg.sft_steps,
        batch_size=cfg.sft_batch_size,
        lr=cfg.sft_lr,
        structured=cfg.structured,
        seed=cfg.seed,
        progress=cfg.progress,
    )
    if "stage1_sft" not in done:
        sft_train(model, tok, easy_train, sft_cfg, log, stage="stage1_sft", tags=tags)
        finish("stage1_sft", t0)

    def rl_config(steps: int, reward: str) -> GRPOConfig:
        return GRPOConfig(
            steps=steps,
            prompts_per_step=cfg.prompts_per_step,
            group_size=cfg.group_size,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            lr=cfg.rl_lr,
            kl_coef=cfg.kl_coef,
            reward=reward,
            structured=cfg.structured,
            seed=cfg.seed,
            progress=cfg.progress,
        )

    rl_stages = (
        ("stage2_grpo_easy", easy_train, cfg.stage2_steps, "gsm8k_stage"),
        ("stage3_grpo_hard", hard_train, cfg.stage3_steps, "alternating"),
    )
    for stage, examples, steps, reward in rl_stages:
        if stage in done:
            continue
        t0 = time.perf_counter()
        grpo_train(model, tok, examples, rl_config(steps, reward), log, stage=stage, tags=tags)
        finish(stage, t0)

    seconds = round(time.perf_counter() - t_start, 1)
    result = {"recipe": "parallel_r1", "stages": stages, "path": str(run), "seconds": seconds}
    (run / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    labels = [label for label, _ in eval_sets]
    n_params = sum(p.numel() for p in model.parameters())
    desc = f"{type(model).__name__} ({n_params / 1e6:.2f}M parameters)"
    (run / "report.md").write_text(_report(cfg, stages, seconds, labels, desc))
    plot_metrics(log.rows, run / "curves.png")
    return result


def _report(
    cfg: ParallelR1Config,
    stages: list[dict[str, Any]],
    seconds: float,
    labels: list[str],
    desc: str,
) -> str:
    variant = "structured (Unseen)" if cfg.structured else "causal (Seen)"
    lines = [
        "# Parallel-R1 demo",
        "",
        f"{desc}, {variant} layout, seed {cfg.seed}; {seconds:.0f} s in total. Held-out "
        "problems were never in a training set; answers are greedy.",
        "",
        "| stage | "
        + " | ".join(f"{x} accuracy | {x} parallel ratio" for x in labels)
        + " | seconds |",
        "|---|" + "---|---|" * len(labels) + "---|",
    ]
    for s in stages:
        cells = [f"{pct(s[x]['accuracy'])} | {pct(s[x]['parallel_ratio'])}" for x in labels]
        lines.append(f"| {s['stage']} | " + " | ".join(cells) + f" | {s['seconds']} |")
    first, last = stages[0], stages[-1]
    lines.append("")
    if labels == ["easy", "hard"]:
        lines += [
            f"- After stage 1, {pct(first['easy']['parallel_ratio'])} of held-out easy "
            "responses contain a valid parallel block (target: at least 80%).",
            f"- Held-out hard accuracy: {pct(first['hard']['accuracy'])} after stage 1, "
            f"{pct(last['hard']['accuracy'])} after stage 3 (target: higher after stage 3).",
            "",
        ]
    lines += [
        "Parallel ratio = responses with at least one valid block (closed, >= 2 paths, a summary) "
        "and no malformed one. Per-step curves: `metrics.jsonl`, `curves.png`.",
        "",
    ]
    return "\n".join(lines)


RECIPES: dict[str, Callable[..., dict[str, Any]]] = {
    "parallel_r1": run_parallel_r1,
    "zerosearch": run_zerosearch,
}
"""Recipes by name (:func:`get_recipe` ignores case, ``-`` and ``_``)."""
CONFIGS: dict[str, type[RecipeConfig]] = {
    "parallel_r1": ParallelR1Config,
    "zerosearch": ZeroSearchConfig,
}
"""The config class of each recipe."""


def recipe_name(name: str) -> str:
    """The registered name of a recipe (``parallel-r1``, ``Zero-Search``, ... are accepted).

    Raises:
        ArgumentError: If there is no such recipe (the message lists the known ones).

    Example:
        >>> recipe_name("parallel-r1"), recipe_name("zero_search")
        ('parallel_r1', 'zerosearch')
        >>> recipe_name("parallel-r2")
        Traceback (most recent call last):
        ...
        r1kit.errors.ArgumentError: `recipe`: unknown recipe 'parallel-r2' (known: ...)
    """

    def fold(x: str) -> str:
        return x.lower().replace("-", "").replace("_", "")

    for key in RECIPES:
        if fold(key) == fold(name):
            return key
    raise ArgumentError(f"`recipe`: unknown recipe {name!r} (known: {', '.join(sorted(RECIPES))})")


def get_recipe(name: str) -> Callable[..., dict[str, Any]]:
    """The recipe called ``name`` (see :func:`recipe_name`).

    Raises:
        ArgumentError: If there is no such recipe (the message lists the known ones).

    Example:
        >>> get_recipe("parallel-r1") is run_parallel_r1, get_recipe("zerosearch") is run_zerosearch
        (True, True)
    """
    return RECIPES[recipe_name(name)]
