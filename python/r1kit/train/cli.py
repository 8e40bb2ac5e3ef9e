"""The ``r1kit`` console script: ``r1kit demo`` and ``r1kit train``.

``r1kit demo [parallel-r1|zerosearch|all]`` and ``r1kit train --recipe NAME --model DIR --data
FILE.jsonl`` (a local Hugging Face model folder and JSON-lines data; the same code path).

``r1kit demo parallel-r1`` runs the Parallel-R1 recipe on the embedded synthetic data with a tiny
random Qwen2 (no download) and writes ``runs/parallel-r1/{metrics.jsonl,report.md,results.json}``.
``--config FILE.toml`` overrides settings (unknown keys are errors); ``--quick`` shrinks every
stage to a smoke run.

Example:
    >>> main(["demo", "nothing"])
    Traceback (most recent call last):
    ...
    r1kit.errors.ArgumentError: `recipe`: unknown recipe 'nothing' (known: parallel_r1)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tomllib

from r1kit.errors import ArgumentError, R1KitError

__all__ = ["QUICK", "load_config", "load_model", "main"]

QUICK: dict[str, Any] = {
    "sft_steps": 20,
    "stage2_steps": 2,
    "stage3_steps": 2,
    "n_eval": 8,
    "n_eval_easy": 8,
    "n_easy_train": 200,
    "n_hard_train": 200,
    "max_new_tokens": 32,
    "group_size": 4,
    "prompts_per_step": 2,
}
"""Overrides of ``--quick``: every stage runs, in seconds."""


def load_config(path: str | Path) -> dict[str, Any]:
    """Reads a TOML file of config keys.

    Raises:
        ArgumentError: If the file does not exist or is not valid TOML.
    """
    p = Path(path)
    if not p.is_file():
        raise ArgumentError(f"`--config`: no such file {str(p)!r}")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ArgumentError(f"`--config` {p}: not valid TOML ({e})") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r1kit", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a recipe on synthetic data with a tiny model")
    demo.add_argument("recipe", nargs="?", default="all", help="parallel-r1, zerosearch or all")
    demo.add_argument("--out", default="runs", help="parent folder of the run (default runs/)")
    demo.add_argument("--config", help="TOML file of config overrides")
    demo.add_argument("--quick", action="store_true", help="a smoke run of every stage")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    demo.add_argument("--resume", action="store_true", help="skip stages already checkpointed")
    train = sub.add_parser("train", help="run a recipe on a local model and a data file")
    train.add_argument("--recipe", required=True, help="parallel-r1")
    train.add_argument("--model", required=True, help="a local Hugging Face model folder")
    train.add_argument("--data", required=True, help="JSON lines: prompt, answer[, response]")
    train.add_argument("--out", default="runs", help="parent folder of the run (default runs/)")
    train.add_argument("--config", help="TOML file of config overrides")
    train.add_argument("--quick", action="store_true", help="a smoke run of every stage")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    train.add_argument("--resume", action="store_true", help="skip stages already checkpointed")
    return parser


def load_model(path: str | Path) -> tuple[Any, Any]:
    """Loads a causal LM and its tokenizer from a local folder (never from the network).

    Raises:
        ArgumentError: If the folder does not exist or holds no loadable model / tokenizer.
    """
    p = Path(path)
    if not p.is_dir():
        raise ArgumentError(f"`--model`: no such directory {str(p)!r}")
    import transformers

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(p, local_files_only=True)
        model = transformers.AutoModelForCausalLM.from_pretrained(p, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ArgumentError(f"`--model` {p}: not a loadable causal LM folder ({e})") from None
    return model, tokenizer


def _train(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from r1kit.train.data import load_jsonl
    from r1kit.train.recipes import ParallelR1Config, get_recipe

    recipe = get_recipe(args.recipe)
    if Path(args.data).suffix != ".jsonl":
        raise ArgumentError(f"`--data`: expected a .jsonl file, got {args.data!r}")
    config = ParallelR1Config.from_dict({"name": Path(args.data).stem, **overrides})
    data = load_jsonl(args.data)
    model, tokenizer = load_model(args.model)
    result = recipe(config, args.out, model=model, tokenizer=tokenizer, data=data)
    print((Path(result["path"]) / "report.md").read_text())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``r1kit`` console script; returns the exit status.

    Raises:
        ArgumentError: For an unknown recipe, a missing config file, an unknown config key, a
            model folder that does not exist or a data file with a missing field.
    """
    args = _parser().parse_args(argv)
    from r1kit.train.recipes import ParallelR1Config, get_recipe

    overrides: dict[str, Any] = dict(QUICK) if args.quick else {}
    if args.config:
        overrides.update(load_config(args.config))
    if args.no_progress:
        overrides["progress"] = False
    if args.resume:
        overrides["resume"] = True
    if args.command == "train":
        return _train(args, overrides)
    names = ["parallel_r1", "zerosearch"] if args.recipe == "all" else [args.recipe]
    recipes = []
    for name in names:
        try:
            recipes.append(get_recipe(name))
        except ArgumentError:
            if args.recipe == "all" and name == "zerosearch":
                print("r1kit demo: skipping zerosearch (not available yet)", file=sys.stderr)
                continue
            raise
    for recipe in recipes:
        config = ParallelR1Config.from_dict(overrides)
        result = recipe(config, args.out)
        print((Path(result["path"]) / "report.md").read_text())
    return 0


def run() -> None:
    """Console-script wrapper: r1kit errors print one line and exit with status 2."""
    try:
        sys.exit(main())
    except R1KitError as e:
        print(f"r1kit: error: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
