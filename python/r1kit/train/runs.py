"""What every recipe shares: configs read from TOML tables, and the run folder with its stages.

A run folder ``runs/<name>/`` holds ``metrics.jsonl`` (one line per step), one checkpoint folder
per finished stage (the model, the tokenizer and ``eval.json``, written last so that a folder
with ``eval.json`` is a finished stage), ``results.json``, ``report.md`` and ``curves.png``.
:func:`open_run` reopens a folder for ``--resume``: finished stages are kept (their metric lines
and held-out results), the rest is run again.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Cfg(RecipeConfig):
    ...     steps: int = 3
    ...     lr: float = 0.1
    >>> Cfg.from_dict({"steps": 5, "lr": 1}).lr
    1.0
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from r1kit.errors import ArgumentError
from r1kit.train.core import MetricsLog
from r1kit.train.model import add_tag_tokens, build_tokenizer, tiny_model

__all__ = ["RecipeConfig", "finish_stage", "load_stage_model", "open_run", "pct"]

C = TypeVar("C", bound="RecipeConfig")
T = TypeVar("T")


class RecipeConfig:
    """Base of the recipe configs (dataclasses): :meth:`from_dict` with strict key checks."""

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any]) -> C:
        """Builds a config from a mapping (a TOML table), rejecting unknown keys.

        Ints are accepted where a float is expected; nothing else is converted.

        Raises:
            ArgumentError: If a key is not a field (the message names it and lists the fields)
                or a value has the wrong type.
        """
        fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        defaults = cls()
        for key, value in values.items():
            if key not in fields:
                known = ", ".join(sorted(fields))
                raise ArgumentError(f"`config`: unknown key {key!r} (known: {known})")
            want = type(getattr(defaults, key))
            ok = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                raise ArgumentError(
                    f"`config` key {key!r}: expected {want.__name__}, got {type(value).__name__}"
                )
        kwargs: dict[str, Any] = {
            k: float(v) if isinstance(getattr(defaults, k), float) else v for k, v in values.items()
        }
        return cls(**kwargs)


def _finished(run: Path, stages: Sequence[str]) -> list[str]:
    done = []
    for stage in stages:
        if not (run / "checkpoints" / stage / "eval.json").is_file():
            break
        done.append(stage)
    return done


def open_run(
    run: Path, stages: Sequence[str], resume: bool
) -> tuple[MetricsLog, list[str], list[dict[str, Any]]]:
    """Opens the run folder: the metrics log, the finished stages and their held-out results.

    Without ``resume`` every stage counts as unfinished and ``metrics.jsonl`` starts empty; with
    it, the leading stages whose checkpoint is complete are kept, with their metric lines.

    Args:
        run: The run folder (created if missing).
        stages: The recipe's stages, in order.
        resume: Keep finished stages.

    Returns:
        ``(log, done, results)``: the log (its ``rows`` hold the kept lines), the finished stage
        names and each one's ``eval.json``.
    """
    run.mkdir(parents=True, exist_ok=True)
    done = _finished(run, stages) if resume else []
    kept: list[dict[str, Any]] = []
    if done and (run / "metrics.jsonl").is_file():
        lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        kept = [r for r in map(json.loads, lines) if r.get("stage") in done]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    log = MetricsLog(run / "metrics.jsonl")
    log.rows = kept
    results = [json.loads((run / "checkpoints" / st / "eval.json").read_text()) for st in done]
    return log, done, results


@contextmanager
def _no_transformers_bars() -> Iterator[None]:
    """Hides transformers' own load / save bars (they would break the stage bars' lines)."""
    logging: Any = importlib.import_module("transformers.utils.logging")
    was = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            logging.enable_progress_bar()


def load_stage_model(run: Path, stage: str) -> Any:
    """The model saved at the end of ``stage`` (local files only)."""
    import transformers

    with _no_transformers_bars():
        return transformers.AutoModelForCausalLM.from_pretrained(
            run / "checkpoints" / stage, local_files_only=True
        )


def finish_stage(run: Path, stage: str, model: Any, tokenizer: Any, result: dict[str, Any]) -> None:
    """Saves the stage's checkpoint; ``eval.json`` goes last and marks the stage finished."""
    ckpt = run / "checkpoints" / stage
    with _no_transformers_bars():
        model.save_pretrained(ckpt)
        tokenizer.save_pretrained(ckpt)
    (ckpt / "eval.json").write_text(json.dumps(result))


def model_and_tokenizer(
    cfg: Any, model: Any | None, tokenizer: Any | None, tags: tuple[str, ...]
) -> tuple[Any, Any]:
    """The recipe's model and tokenizer: the demo's tiny pair, or the user's with ``tags`` added.

    ``cfg`` gives ``seed`` (and, for the demo model, ``hidden_size``, ``num_layers`` and
    ``num_heads``). A user's tokenizer without a pad token pads with its EOS token.

    Example:
        >>> from types import SimpleNamespace
        >>> cfg = SimpleNamespace(seed=0, hidden_size=16, num_layers=1, num_heads=2)
        >>> model, tok = model_and_tokenizer(cfg, None, None, ())
        >>> model.config.vocab_size == len(tok)
        True
    """
    if model is None or tokenizer is None:
        tokenizer = build_tokenizer()
        model = tiny_model(
            len(tokenizer), cfg.hidden_size, cfg.num_layers, cfg.num_heads, seed=cfg.seed
        )
        return model, tokenizer
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    add_tag_tokens(tokenizer, model, tags, seed=cfg.seed)
    return model, tokenizer


def split_held_out(data: Sequence[T], n_eval: int, seed: int) -> tuple[list[T], list[T]]:
    """``(held_out, train)``: ``n_eval`` rows of a user's data set aside after a seeded shuffle.

    Raises:
        ArgumentError: When nothing would be left to train on.

    Example:
        >>> split_held_out(range(5), 2, seed=0)
        ([2, 1], [0, 4, 3])
        >>> split_held_out(range(2), 2, seed=0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        r1kit.errors.ArgumentError: `data`: 2 rows leave nothing to train on after holding out ...
    """
    rows = list(data)
    random.Random(seed).shuffle(rows)
    if len(rows) <= n_eval:
        raise ArgumentError(
            f"`data`: {len(rows)} rows leave nothing to train on after holding out n_eval={n_eval}"
        )
    return rows[:n_eval], rows[n_eval:]


def pct(x: float) -> str:
    """A share as a percentage with one decimal (``n/a`` for NaN)."""
    return "n/a" if x != x else f"{100 * x:.1f}%"
