"""A corpus of (response, gold, truth) math pairs whose truth is known by construction.

Each base value (integer, fraction, terminating decimal, large integer, tuple, interval, set) is
written in equivalent forms (truth True) and as near misses (neighbouring values, reciprocals,
wrong signs, swapped tuples, a decimal point shifted, other brackets; truth False), then put in
every answer format of ``shared/spec/rewards.md``: Final Answer lines with and without ``x =``,
``\\boxed{}`` with and without ``$...$``. Truth is computed from the values (Fractions), not from
the strings. Used by tests/test_rewards.py and benches/bench_rewards.py.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction

Value = Fraction | tuple[str, tuple[Fraction, ...], str]


@dataclass(frozen=True)
class Pair:
    response: str
    gold: str
    truth: bool
    kind: str


def _int_forms(v: int) -> list[str]:
    forms = [str(v), f"{v}.0", f"\\frac{{{2 * v}}}{{2}}", f"{3 * v}/3"]
    if v > 0:
        forms += [f"+{v}", f"00{v}"]
    if abs(v) >= 1000:
        forms.append(f"{v:,}")
    return forms


def _terminating(f: Fraction) -> str | None:
    d = f.denominator
    k = 0
    while d % 2 == 0:
        d //= 2
        k += 1
    j = 0
    while d % 5 == 0:
        d //= 5
        j += 1
    if d != 1:
        return None
    digits = max(k, j, 1)
    s = f"{abs(f.numerator) * 10**digits // f.denominator}".rjust(digits + 1, "0")
    text = f"{s[:-digits]}.{s[-digits:]}"
    return ("-" if f < 0 else "") + text


def _frac_forms(f: Fraction) -> list[str]:
    p, q = f.numerator, f.denominator
    a = abs(p)
    sign = "-" if p < 0 else ""
    forms = [
        f"{sign}\\frac{{{a}}}{{{q}}}",
        f"{sign}\\dfrac{{{a}}}{{{q}}}",
        f"\\frac{{{p}}}{{{q}}}",
        f"{p}/{q}",
        f"{sign}\\frac{{{2 * a}}}{{{2 * q}}}",
    ]
    if a < 10 and q < 10:
        forms.append(f"{sign}\\frac{a}{q}")
        forms.append(f"{sign}\\tfrac{a}{q}")
    dec = _terminating(f)
    if dec is not None:
        forms.append(dec)
        if dec.startswith("0."):
            forms.append(dec[1:])
    if a > q:
        whole, rest = divmod(a, q)
        forms.append(f"{sign}{whole}\\frac{{{rest}}}{{{q}}}")
    return forms


def _canonical(f: Fraction) -> str:
    if f.denominator == 1:
        return str(f.numerator)
    sign = "-" if f < 0 else ""
    return f"{sign}\\frac{{{abs(f.numerator)}}}{{{f.denominator}}}"


def _number_forms(f: Fraction) -> list[str]:
    return _int_forms(f.numerator) if f.denominator == 1 else _frac_forms(f)


def _number_misses(f: Fraction) -> list[Fraction]:
    out = [f + 1, f - 1, -f, f * 10, f / 10]
    if f != 0:
        out.append(1 / f)
    if f.denominator != 1:
        out.append(Fraction(f.numerator + 1, f.denominator))
    return [m for m in out if m != f]


def _render(v: Value, rng: random.Random) -> str:
    if isinstance(v, Fraction):
        return rng.choice(_number_forms(v))
    left, items, right = v
    parts = [rng.choice(_number_forms(x)) for x in items]
    sep = rng.choice([", ", ",", " , "])
    body = sep.join(parts)
    if left == "\\{":
        return f"\\{{{body}\\}}"
    if rng.random() < 0.5:
        return f"\\left{left} {body} \\right{right}"
    return f"{left}{body}{right}"


def _gold(v: Value) -> str:
    if isinstance(v, Fraction):
        return _canonical(v)
    left, items, right = v
    body = ", ".join(_canonical(x) for x in items)
    if left == "\\{":
        return f"\\{{{body}\\}}"
    return f"{left}{body}{right}"


def _same(a: Value, b: Value) -> bool:
    if isinstance(a, Fraction) or isinstance(b, Fraction):
        return a == b
    if a[0] != b[0] or a[2] != b[2]:
        return False
    if a[0] == "\\{":
        return sorted(a[1]) == sorted(b[1])
    return a[1] == b[1]


FORMATS = [
    ("final", "Let me compute step by step.\nSo the result follows.\nFinal Answer: {a}"),
    ("final_x", "We solve for x carefully.\nFinal Answer: x = {a}"),
    ("final_dollar", "Working it out...\nFinal answer: ${a}$"),
    ("final_minerva", "Final Answer: The final answer is ${a}$. I hope it is correct."),
    ("boxed", "Thus the answer is \\boxed{{{a}}}"),
    ("boxed_dollar", "Therefore, the answer is $\\boxed{{{a}}}$."),
    (
        "parallel_summary",
        "<Parallel><Path>try 1</Path><Path>try 2</Path></Parallel>"
        "<Summary>Both agree.\nFinal Answer: {a}</Summary>",
    ),
]


def _values(rng: random.Random) -> list[Value]:
    vals: list[Value] = []
    for _ in range(40):
        vals.append(Fraction(rng.choice([-1, 1]) * rng.randint(2, 999)))
    for _ in range(10):
        vals.append(Fraction(rng.randint(1000, 9_999_999)))
    for _ in range(40):
        q = rng.choice([2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 16, 20, 25])
        p = rng.choice([-1, 1]) * rng.randint(1, 60)
        f = Fraction(p, q)
        if f.denominator != 1:
            vals.append(f)
    for _ in range(25):
        a, b = Fraction(rng.randint(-20, 20)), Fraction(rng.randint(1, 9), rng.choice([1, 2, 4]))
        if a != b:
            vals.append(("(", (a, b), ")"))
    for _ in range(10):
        a = Fraction(rng.randint(-9, 0))
        b = a + rng.randint(1, 9)
        vals.append((rng.choice(["(", "["]), (a, b), rng.choice([")", "]"])))
    for _ in range(10):
        items = tuple(sorted({Fraction(rng.randint(-9, 9)) for _ in range(3)}))
        if len(items) >= 2:
            vals.append(("\\{", items, "\\}"))
    return vals


def _misses(v: Value) -> list[Value]:
    if isinstance(v, Fraction):
        return list(_number_misses(v))
    left, items, right = v
    out: list[Value] = []
    if left != "\\{" and len(items) == 2:
        out.append((left, (items[1], items[0]), right))
        other = {"(": "[", "[": "("}[left]
        out.append((other, items, right))
    out.append((left, (items[0] + 1, *items[1:]), right))
    out.append((left, (-items[0] if items[0] != 0 else Fraction(5), *items[1:]), right))
    return [m for m in out if not _same(m, v)]


def corpus(seed: int = 0, equivalents: int = 4) -> list[Pair]:
    """Pairs in every format: ``equivalents`` equivalent forms and every near miss per value."""
    rng = random.Random(seed)
    pairs: list[Pair] = []
    for v in _values(rng):
        gold = _gold(v)
        preds: list[tuple[Value, str]] = [(v, "equivalent")] * equivalents
        preds += [(m, "near_miss") for m in _misses(v)]
        for value, kind in preds:
            for fmt_name, fmt in FORMATS:
                answer = _render(value, rng)
                if fmt_name == "final_x" and not isinstance(value, Fraction):
                    continue  # `x = (1, 2)` is not a form anyone writes
                response = fmt.format(a=answer)
                pairs.append(Pair(response, gold, _same(value, v), f"{kind}/{fmt_name}"))
    return pairs
