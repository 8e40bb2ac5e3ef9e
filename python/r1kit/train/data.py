"""Embedded synthetic data: easy and hard arithmetic, a fact table, and JSONL loading.

Everything the demo trains on is generated here from a seed, so nothing is downloaded. Each
:class:`Example` has a ``prompt``, a ``response`` (the target text for SFT; empty where only RL
uses the example) and the gold ``answer``.

- :func:`easy_arithmetic`: ``a+b`` / ``a-b`` / ``a*b`` with single-digit operands, answered by a
  Parallel-R1 trace that solves the problem two ways (the operation, then a commuted or inverse
  check) and summarises.
- :func:`hard_arithmetic`: 3-4 step left-to-right chains such as ``7+2*3-4`` (evaluated strictly
  left to right, no precedence), answered by a step-by-step trace.
- :func:`fact_table`: made-up entities with attributes, as questions with ``<answer>`` targets, for
  the search recipe.

Example:
    >>> ex = easy_arithmetic(1, seed=3)[0]
    >>> ex.prompt, ex.answer
    ('3*9=?\\n', '27')
    >>> ex.response[:59]
    '<Parallel><Path>3*9=27</Path><Path>9*3=27</Path></Parallel>'
"""

from __future__ import annotations

import importlib
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from r1kit.errors import ArgumentError, ArgumentTypeError

__all__ = [
    "Example",
    "easy_arithmetic",
    "fact_table",
    "hard_arithmetic",
    "load_data",
    "load_jsonl",
    "load_parquet",
    "save_jsonl",
]


@dataclass(frozen=True)
class Example:
    """One training or evaluation item.

    Attributes:
        prompt: The text the model is given.
        response: The target continuation for SFT ("" when the example is only for RL / eval).
        answer: The gold answer the rewards compare against.
    """

    prompt: str
    response: str
    answer: str


def _check_count(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int):
        raise ArgumentTypeError(f"`n`: expected an int, got {type(n).__name__}")
    if n < 0:
        raise ArgumentError(f"`n`: expected a non-negative count, got {n}")


def _parallel_trace(first: str, second: str, answer: str) -> str:
    return (
        f"<Parallel><Path>{first}</Path><Path>{second}</Path></Parallel>"
        f"<Summary>{answer}</Summary>Final Answer: {answer}"
    )


def easy_arithmetic(n: int, seed: int = 0) -> list[Example]:
    """``n`` two-operand problems with single-digit operands and a two-way parallel trace.

    ``a+b`` is solved as ``a+b`` and ``b+a``, ``a*b`` as ``a*b`` and ``b*a``, and ``a-b`` as
    ``a-b=c`` then checked as ``c+b=a``.

    Args:
        n: Number of examples.
        seed: Random seed (the same seed gives the same examples).

    Returns:
        The examples.

    Raises:
        ArgumentError: If ``n`` is negative.

    Example:
        >>> [e.prompt for e in easy_arithmetic(3, seed=0)]
        ['6+6=?\\n', '4-8=?\\n', '6-4=?\\n']
    """
    _check_count(n)
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        op = rng.choice("+-*")
        if op == "+":
            c = a + b
            first, second = f"{a}+{b}={c}", f"{b}+{a}={c}"
        elif op == "*":
            c = a * b
            first, second = f"{a}*{b}={c}", f"{b}*{a}={c}"
        else:
            c = a - b
            first, second = f"{a}-{b}={c}", f"{c}+{b}={a}"
        out.append(Example(f"{a}{op}{b}=?\n", _parallel_trace(first, second, str(c)), str(c)))
    return out


def hard_arithmetic(n: int, seed: int = 0, steps: Sequence[int] = (3, 4)) -> list[Example]:
    """``n`` chains of 3 or 4 operations on single digits, evaluated left to right.

    The response is a sequential trace (one ``x op y = z`` per step, then the final answer);
    the recipes use these problems for RL and held-out evaluation.

    Args:
        n: Number of examples.
        seed: Random seed.
        steps: The numbers of operations to draw from.

    Returns:
        The examples.

    Raises:
        ArgumentError: If ``n`` is negative or a step count is below 1.

    Example:
        >>> ex = hard_arithmetic(1, seed=1)[0]
        >>> ex.prompt, ex.answer
        ('9+4+7-7=?\\n', '13')
        >>> ex.response
        '9+4=13,13+7=20,20-7=13 Final Answer: 13'
    """
    _check_count(n)
    if not steps or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in steps):
        raise ArgumentError(f"`steps`: expected positive step counts, got {list(steps)}")
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.choice(list(steps))
        value = rng.randint(0, 9)
        expr = str(value)
        trace = []
        for _ in range(k):
            op, d = rng.choice("+-*"), rng.randint(0, 9)
            new = value + d if op == "+" else value - d if op == "-" else value * d
            trace.append(f"{value}{op}{d}={new}")
            expr += f"{op}{d}"
            value = new
        out.append(Example(f"{expr}=?\n", ",".join(trace) + f" Final Answer: {value}", str(value)))
    return out


_SYLLABLES = ("ka", "lo", "mi", "ru", "te", "zo", "an", "vel", "dor", "sim", "pa", "ne")
_ATTRIBUTES = ("color", "city", "food", "pet")
_VALUES = {
    "color": ("red", "blue", "green", "amber", "violet", "gray"),
    "city": ("osla", "bremo", "tarsk", "quell", "vimar", "delft"),
    "food": ("rice", "figs", "bread", "plums", "beans", "soup"),
    "pet": ("cat", "owl", "fox", "hare", "newt", "crow"),
}


def fact_table(n_entities: int, seed: int = 0) -> list[Example]:
    """A made-up fact table as questions: one per entity and attribute.

    Entities are generated names (``kalo``, ``mivel``, ...); each has a color, city, food and
    pet. Responses use the ``<answer>`` tag the QA rewards read.

    Args:
        n_entities: Number of entities (each gives 4 examples).
        seed: Random seed.

    Returns:
        ``4 * n_entities`` examples.

    Raises:
        ArgumentError: If ``n_entities`` is negative or above 144 (the distinct names).

    Example:
        >>> ex = fact_table(1, seed=0)[0]
        >>> ex.prompt, ex.response, ex.answer
        ('What is the color of anan?\\n', '<answer>red</answer>', 'red')
    """
    _check_count(n_entities)
    possible = len({a + b for a in _SYLLABLES for b in _SYLLABLES})
    if n_entities > possible:
        raise ArgumentError(
            f"`n_entities`: expected at most {possible} (the distinct generated names), "
            f"got {n_entities}"
        )
    rng = random.Random(seed)
    names: list[str] = []
    while len(names) < n_entities:
        name = "".join(rng.choice(_SYLLABLES) for _ in range(2))
        if name not in names:
            names.append(name)
    out = []
    for name in names:
        for attr in _ATTRIBUTES:
            value = rng.choice(_VALUES[attr])
            out.append(
                Example(f"What is the {attr} of {name}?\n", f"<answer>{value}</answer>", value)
            )
    return out


def save_jsonl(examples: Sequence[Example], path: str | Path) -> None:
    """Writes examples as JSON lines with fields ``prompt``, ``response`` and ``answer``."""
    with Path(path).open("w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(asdict(ex)) + "\n")


def load_jsonl(path: str | Path, required: Sequence[str] = ("prompt", "answer")) -> list[Example]:
    """Reads examples from a JSON-lines file (one object per line; blank lines are skipped).

    Fields: ``prompt`` (str), ``answer`` (str or number) and ``response`` (str, optional unless
    listed in ``required``).

    Args:
        path: The file.
        required: Fields every line must have.

    Returns:
        The examples, in file order.

    Raises:
        ArgumentError: If the file does not exist, a line is not a JSON object, or a line lacks a
            required field or has one of the wrong type (the message names the line and field).

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "d.jsonl")
        >>> _ = open(p, "w").write('{"prompt": "1+1=?", "answer": 2}\\n{"prompt": "2+2=?"}\\n')
        >>> load_jsonl(p)
        Traceback (most recent call last):
        ...
        r1kit.errors.ArgumentError: `data` ...d.jsonl line 2: missing field 'answer'
    """
    p = Path(path)
    if not p.is_file():
        raise ArgumentError(f"`data`: no such file {str(p)!r}")
    out = []
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"`data` {p} line {lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ArgumentError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ArgumentError(f"{where}: expected a JSON object, got {type(row).__name__}")
            out.append(_example(row, where, required))
    return out


def _example(row: dict[str, Any], where: str, required: Sequence[str]) -> Example:
    """One data row as an :class:`Example`; errors name ``where`` (file and line or row)."""
    for field in required:
        if field not in row or row[field] is None:
            raise ArgumentError(f"{where}: missing field {field!r}")
    fields = {}
    for field in ("prompt", "response", "answer"):
        value = row.get(field)
        if value is None:
            value = ""
        if field == "answer" and isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ArgumentError(
                f"{where}: field {field!r} expected a string, got {type(value).__name__}"
            )
        fields[field] = value
    return Example(fields["prompt"], fields["response"], fields["answer"])


def load_parquet(path: str | Path, required: Sequence[str] = ("prompt", "answer")) -> list[Example]:
    """Reads examples from a Parquet file (columns ``prompt``, ``answer``, ``response``).

    Needs ``pyarrow`` (in the ``train`` extra). Null cells count as missing.

    Args:
        path: The file.
        required: Columns every row must have (non-null).

    Returns:
        The examples, in file order.

    Raises:
        ArgumentError: If pyarrow is not installed, the file does not exist or is not Parquet,
            or a row lacks a required field or has one of the wrong type (the message names the
            row, counted from 1, and the field).

    Example:
        >>> import tempfile, os
        >>> import pyarrow as pa, pyarrow.parquet as pq
        >>> p = os.path.join(tempfile.mkdtemp(), "d.parquet")
        >>> pq.write_table(pa.table({"prompt": ["1+1=?", "2+2=?"], "answer": ["2", None]}), p)
        >>> load_parquet(p)
        Traceback (most recent call last):
        ...
        r1kit.errors.ArgumentError: `data` ...d.parquet row 2: missing field 'answer'
    """
    try:
        pq: Any = importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise ArgumentError(
            "`data`: reading .parquet files needs pyarrow; install it with "
            "`pip install pyarrow` (or the `r1kit[train]` extra)"
        ) from None
    p = Path(path)
    if not p.is_file():
        raise ArgumentError(f"`data`: no such file {str(p)!r}")
    try:
        rows = pq.read_table(p).to_pylist()
    except Exception as e:  # pyarrow raises its own ArrowInvalid / OSError kinds
        raise ArgumentError(f"`data` {p}: not a readable Parquet file ({e})") from None
    return [_example(row, f"`data` {p} row {i}", required) for i, row in enumerate(rows, start=1)]


def load_data(path: str | Path, required: Sequence[str] = ("prompt", "answer")) -> list[Example]:
    """Reads a ``.jsonl`` (:func:`load_jsonl`) or ``.parquet`` (:func:`load_parquet`) file.

    Raises:
        ArgumentError: For another suffix, or as the two readers.

    Example:
        >>> load_data("data.csv")
        Traceback (most recent call last):
        ...
        r1kit.errors.ArgumentError: `--data`: expected a .jsonl or .parquet file, got 'data.csv'
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        return load_jsonl(path, required)
    if suffix == ".parquet":
        return load_parquet(path, required)
    raise ArgumentError(f"`--data`: expected a .jsonl or .parquet file, got {str(path)!r}")
