"""The ``r1kit`` console script: ``r1kit demo`` and ``r1kit train``.

``r1kit demo [parallel-r1|zerosearch|all]`` and ``r1kit train --recipe NAME --model DIR --data
FILE.jsonl|FILE.parquet`` (a local Hugging Face model folder and a data file; the same code
path).

``r1kit demo parallel-r1`` runs the Parallel-R1 recipe on the embedded synthetic data with a tiny
random Qwen2 (no download) and writes ``runs/parallel-r1/{metrics.jsonl,report.md,results.json,
curves.png}`` and a checkpoint per stage; ``r1kit demo zerosearch`` does the same for the
ZeroSearch recipe in ``runs/zerosearch/``. ``--config FILE.toml`` overrides settings: top-level
keys apply to every recipe that runs, a ``[parallel_r1]`` or ``[zerosearch]`` table to that recipe
only, and unknown keys are errors. ``--quick`` shrinks every stage to a smoke run.

Example:
    >>> main(["demo", "nothing"])
    Traceback (most recent call last):
    ...
    r1kit.errors.ArgumentError: `recipe`: unknown recipe 'nothing' (known: parallel_r1, zerosearch)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tomllib

from r1kit.errors import ArgumentError, R1KitError

__all__ = ["QUICK", "load_config", "load_model", "main", "recipe_overrides"]

QUICK: dict[str, dict[str, Any]] = {
    "parallel_r1": {
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
    },
    "zerosearch": {
        "sft_steps": 10,
        "rl_steps": 2,
        "n_entities": 12,
        "n_eval_entities": 2,
        "n_eval": 8,
        "group_size": 4,
        "prompts_per_step": 2,
    },
}
"""Overrides of ``--quick`` per recipe: every stage runs, in seconds."""


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
    train = sub.add_parser("train", help="run a recipe on a local model and a data file")
    train.add_argument("--recipe", required=True, help="parallel-r1 or zerosearch")
    train.add_argument("--model", required=True, help="a local Hugging Face model folder")
    train.add_argument(
        "--data", required=True, help=".jsonl or .parquet: prompt, answer[, response]"
    )
    for cmd in (demo, train):
        cmd.add_argument("--out", default="runs", help="parent folder of the run (default runs/)")
        cmd.add_argument("--config", help="TOML file of config overrides")
        cmd.add_argument("--quick", action="store_true", help="a smoke run of every stage")
        cmd.add_argument("--no-progress", action="store_true", help="hide the progress bars")
        cmd.add_argument("--resume", action="store_true", help="skip stages already checkpointed")
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


def recipe_overrides(
    table: dict[str, Any], recipes: Sequence[str], quick: bool = False
) -> dict[str, dict[str, Any]]:
    """The config overrides of each recipe from a TOML table (``--quick`` defaults first).

    Top-level keys apply to every recipe in ``recipes``; a table named after a recipe applies to
    that recipe only (and overrides the top level).

    Raises:
        ArgumentError: If a table names no known recipe, a top-level ``name`` would send several
            recipes to one run folder, or a key is unknown to a recipe it applies to (from the
            recipe's config).

    Example:
        >>> recipe_overrides({"seed": 1, "zerosearch": {"rl_steps": 5}}, ["zerosearch"])
        {'zerosearch': {'seed': 1, 'rl_steps': 5}}
    """
    from r1kit.train.recipes import CONFIGS, recipe_name

    tables = {}
    common = {}
    for key, value in table.items():
        if isinstance(value, dict):
            try:
                tables[recipe_name(key)] = value
            except ArgumentError:
                known = ", ".join(sorted(CONFIGS))
                raise ArgumentError(
                    f"`config`: table [{key}] names no recipe (known: {known})"
                ) from None
        else:
            common[key] = value
    if "name" in common and len(recipes) > 1:
        raise ArgumentError(
            "`config`: a top-level 'name' would send every recipe to one run folder; set it "
            "in a [parallel_r1] or [zerosearch] table"
        )
    out = {}
    for name in recipes:
        values = {**(QUICK[name] if quick else {}), **common, **tables.get(name, {})}
        CONFIGS[name].from_dict(values)  # unknown keys and wrong types fail before any run
        out[name] = values
    return out


def _train(args: argparse.Namespace, table: dict[str, Any]) -> int:
    from r1kit.train.data import load_data
    from r1kit.train.recipes import CONFIGS, RECIPES, recipe_name

    name = recipe_name(args.recipe)
    values = {"name": Path(args.data).stem, **recipe_overrides(table, [name], args.quick)[name]}
    config = CONFIGS[name].from_dict(values)
    data = load_data(args.data)
    model, tokenizer = load_model(args.model)
    result = RECIPES[name](config, args.out, model=model, tokenizer=tokenizer, data=data)
    print((Path(result["path"]) / "report.md").read_text())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``r1kit`` console script; returns the exit status.

    Raises:
        ArgumentError: For an unknown recipe, a missing config file, an unknown config key, a
            model folder that does not exist or a data file with a missing field.
    """
    args = _parser().parse_args(argv)
    from r1kit.train.recipes import CONFIGS, RECIPES, recipe_name

    table: dict[str, Any] = load_config(args.config) if args.config else {}
    if args.no_progress:
        table["progress"] = False
    if args.resume:
        table["resume"] = True
    if args.command == "train":
        return _train(args, table)
    names = list(RECIPES) if args.recipe == "all" else [recipe_name(args.recipe)]
    overrides = recipe_overrides(table, names, args.quick)
    for name in names:
        config = CONFIGS[name].from_dict(overrides[name])
        result = RECIPES[name](config, args.out)
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
