"""r1kit.rewards: spec examples, an independent Python reference of the QA spec, a math table and
a generated math corpus, the Parallel-R1 recipes, token ids == text, bad and strange inputs."""

from __future__ import annotations

import json
import re
import string
import time
import unicodedata
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import r1kit
from math_corpus import corpus
from r1kit import _core
from r1kit import rewards as R

# ---------------------------------------------------------------------------------------------
# QA: an independent implementation of the spec, written the way the references do it.


def ref_normalize(s: str, unicode: bool = False) -> str:
    if unicode:
        s = "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))
    s = s.lower()
    s = "".join(
        ch
        for ch in s
        if ch not in string.punctuation
        and not (unicode and unicodedata.category(ch).startswith("P"))
    )
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def ref_f1(pred: str, gold: str, unicode: bool = False) -> float:
    p, g = ref_normalize(pred, unicode).split(), ref_normalize(gold, unicode).split()
    same = sum((Counter(p) & Counter(g)).values())
    if same == 0:
        return 0.0
    precision, recall = 1.0 * same / len(p), 1.0 * same / len(g)
    return (2 * precision * recall) / (precision + recall)


def ref_extract(response: str) -> str | None:
    matches = list(re.finditer(r"<answer>(.*?)</answer>", response, re.DOTALL))
    return matches[-1].group(1).strip() if matches else None


def ref_score(response: str, golds: list[str], metric: str, unicode: bool = False) -> float:
    answer = ref_extract(response)
    if answer is None:
        return 0.0
    best = 0.0
    for gold in golds:
        g = ref_normalize(gold, unicode)
        if not g:
            continue  # the spec: an empty gold never matches
        p = ref_normalize(answer, unicode)
        if metric == "f1":
            best = max(best, ref_f1(answer, gold, unicode))
        elif metric == "em":
            best = max(best, float(p == g))
        else:
            best = max(best, float(g in p))
    return best


WS = ["William Shakespeare", "Shakespeare"]


@pytest.mark.parametrize(
    ("response", "golds", "metric", "expected"),
    [
        ("<answer> William Shakespeare </answer>", WS, "f1", 1.0),
        ("<answer>Shakespeare, the playwright</answer>", WS[:1], "f1", 0.5),
        ("<answer>it was William Shakespeare in 1600</answer>", WS[:1], "f1", 0.5),
        ("<answer>it was William Shakespeare in 1600</answer>", WS[:1], "contains", 1.0),
        ("<answer>it was William Shakespeare in 1600</answer>", WS[:1], "em", 0.0),
        ("<answer></answer>", WS, "f1", 0.0),
        ("<answer>Marlowe</answer> ... <answer>Shakespeare</answer>", WS[:1], "f1", 2 / 3),
        ("<answer>Romeo</answer>", ["Rome"], "f1", 0.0),
        ("<answer>Romeo</answer>", ["Rome"], "contains", 1.0),
        ("<answer>Shakespeare Shakespeare</answer>", WS[:1], "f1", 0.5),
        ("<answer>1,000</answer>", ["1000"], "f1", 1.0),
        ("<answer>Paris", ["Paris"], "f1", 0.0),
    ],
)
def test_qa_spec_examples(response: str, golds: list[str], metric: str, expected: float) -> None:
    got = R.qa_scores([response], [golds], metric)  # type: ignore[arg-type]
    assert got.dtype == torch.float32 and got.shape == (1,)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_qa_empty_gold_never_matches_and_prompt_is_not_read() -> None:
    # The reference matches "" against everything; the spec does not.
    r = ["<answer>anything</answer>", "<answer></answer>"]
    for metric in ("f1", "em", "contains"):
        assert R.qa_scores(r, [["", "!!"], [" the "]], metric).tolist() == [0.0, 0.0]  # type: ignore[arg-type]
    # A response with no answer is "no answer", whatever a prompt would have contained.
    d = R.qa_scores_detailed(["I think it is Beijing."], ["Beijing"])
    assert d.scores.tolist() == [0.0] and d.answers == [None] and d.no_answer.tolist() == [True]


def test_qa_format_scores() -> None:
    good = (
        "<think>plan</think>\n<search>capital of France</search>"
        "<information>Paris is ...</information><think>so</think> <answer>Paris</answer>\n"
    )
    responses = [
        good,  # correct, well formed
        "<answer>Paris</answer>",  # correct, malformed (no think)
        "<think>x</think><answer>Rome</answer>",  # wrong, well formed
        "<think>x</think> stray text <answer>Rome</answer>",  # wrong, malformed
        "no answer at all",  # no answer, malformed
        good.replace("</information>", ""),  # unbalanced
    ]
    got = R.qa_format_scores(responses, ["Paris"] * 6)
    torch.testing.assert_close(got, torch.tensor([1.0, 0.8, 0.2, 0.1, 0.0, 0.8]))
    got = R.qa_format_scores(responses, ["Paris"] * 6, structure_score=0.3, final_format_score=0.05)
    torch.testing.assert_close(got, torch.tensor([1.0, 0.7, 0.3, 0.05, 0.0, 0.7]))


words = st.sampled_from(
    ["a", "an", "the", "The", "AN", "Paris", "paris", "New", "York", "1,000", "1000", "x-ray",
     "café", "Café", "naïve", "théâtre", "A.", "(the)", "l'the", "don't", "_a_", "an_"]
)  # fmt: skip
separators = st.sampled_from([" ", "  ", "\t", "\n", ", ", "-", "\u00a0", "\u3000", "\x1f", ""])
phrases = st.lists(st.tuples(words, separators), max_size=8).map(
    lambda xs: "".join(w + s for w, s in xs)
)
anytext = st.text(
    alphabet=st.characters(exclude_categories=("Cs", "Cn")), max_size=20
)  # assigned code points in this Python's Unicode data
mixed = st.one_of(phrases, anytext, st.tuples(phrases, anytext).map("".join))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(mixed, st.lists(mixed, min_size=1, max_size=3)), max_size=6))
def test_qa_matches_python_reference(batch: list[tuple[str, list[str]]]) -> None:
    responses = [f"<answer>{p}</answer>" for p, _ in batch]
    golds = [g for _, g in batch]
    for p, _ in batch:
        assert R.normalize_answer(p) == ref_normalize(p)
    for metric in ("f1", "em", "contains"):
        got = R.qa_scores(responses, golds, metric)  # type: ignore[arg-type]
        want = [ref_score(r, g, metric) for r, g in batch for r in [f"<answer>{r}</answer>"]]
        assert got.tolist() == torch.tensor(want, dtype=torch.float32).tolist()


latin = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x24F, exclude_categories=("Cs",))
    | st.sampled_from(
        list(
            "\u00ab\u00bb\u201c\u201d\u2018\u2019\u2014\u2013\u2026\u00bf\u00a1\u3001\u3002\u300c\u300d"
        )
    ),
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(latin, latin), min_size=1, max_size=5))
def test_qa_unicode_option_matches_reference(pairs: list[tuple[str, str]]) -> None:
    for p, _ in pairs:
        assert R.normalize_answer(p, unicode=True) == ref_normalize(p, unicode=True)
    got = R.qa_scores(
        [f"<answer>{p}</answer>" for p, _ in pairs], [g for _, g in pairs], "f1", True
    )
    want = [ref_score(f"<answer>{p}</answer>", [g], "f1", True) for p, g in pairs]
    assert got.tolist() == torch.tensor(want, dtype=torch.float32).tolist()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["<answer>", "</answer>", "x", " y ", "<answer", "\n"]), max_size=12)
)
def test_extract_answer_matches_regex(parts: list[str]) -> None:
    s = "".join(parts)
    assert R.extract_answer([s]) == [ref_extract(s)]


# ---------------------------------------------------------------------------------------------
# Math: a table of rules and equivalence classes (each at least twice), with negatives.

MATH_TABLE: list[tuple[str, str, bool]] = [
    # exact rationals: decimals, fractions, a/b
    ("0.5", "\\frac{1}{2}", True),
    ("1/2", "\\frac{1}{2}", True),
    ("2/4", "0.5", True),
    ("0.50", "\\frac{2}{4}", True),
    ("0.125", "\\frac{1}{8}", True),
    ("-0.75", "-\\frac{3}{4}", True),
    ("\\frac{-3}{4}", "-\\frac{3}{4}", True),
    ("1/2", "2", False),
    ("0.5", "0.05", False),
    ("\\frac{1}{3}", "0.333", False),
    ("-\\frac{1}{2}", "\\frac{1}{2}", False),
    ("\\frac{2}{1}", "\\frac{1}{2}", False),
    # leading + and zeros
    ("+7", "7", True),
    ("007", "7", True),
    ("-07", "-7", True),
    ("+7", "-7", False),
    ("70", "7", False),
    # \dfrac / \tfrac and shorthands
    ("\\dfrac{1}{2}", "\\frac12", True),
    ("\\tfrac{3}{4}", "\\frac{3}{4}", True),
    ("\\frac1{2}", "0.5", True),
    ("\\frac{1}2", "1/2", True),
    ("\\dfrac34", "0.75", True),
    ("\\frac12", "\\frac21", False),
    # \sqrt shorthand
    ("\\sqrt3", "\\sqrt{3}", True),
    ("2\\sqrt2", "2 \\sqrt{2}", True),
    ("\\frac{\\sqrt3}{2}", "\\frac{\\sqrt{3}}{2}", True),
    ("\\sqrt{3}", "\\sqrt{2}", False),
    ("2\\sqrt{3}", "3\\sqrt{2}", False),
    # leading .5
    (".5", "0.5", True),
    ("-.25", "-\\frac14", True),
    (".5", "5", False),
    # \left / \right, \!, spaces
    ("\\left( 1, 2 \\right)", "(1,2)", True),
    ("\\left[ 0, 1 \\right)", "[0,1)", True),
    ("1\\!000", "1000", True),
    ("\\left( 1, 2 \\right)", "\\left( 2, 1 \\right)", False),
    # degrees, dollars, percent
    ("90^\\circ", "90", True),
    ("90^{\\circ}", "90", True),
    ("\\$5.00", "5", True),
    ("\\$1,000", "1000", True),
    ("50\\%", "50", True),
    ("25%", "25", True),
    ("50\\%", "0.5", False),
    ("90^\\circ", "9", False),
    # units
    ("12 \\text{ cm}", "12", True),
    ("12 \\text{ cm}^2", "12", True),
    ("5 square units", "5", True),
    ("30 \\mbox{ inches}", "30", True),
    ("12 \\text{ cm}", "13", False),
    # \text / \textbf / \boxed unwrapped
    ("\\text{(B)}", "(B)", True),
    ("\\textbf{(C)}", "\\text{(C)}", True),
    ("\\boxed{7}", "7", True),
    ("\\boxed{\\frac{1}{2}}", "0.5", True),
    ("\\text{(B)}", "(C)", False),
    ("\\boxed{7}", "\\boxed{8}", False),
    # thousands separators
    ("1,000,000", "1000000", True),
    ("12{,}345", "12345", True),
    ("1\\,234", "1234", True),
    ("1,000", "100", False),
    ("1,2", "12", False),
    # mixed numbers
    ("3\\frac{1}{2}", "\\frac{7}{2}", True),
    ("3 1/2", "3.5", True),
    ("-2\\frac{1}{4}", "-2.25", True),
    ("3\\frac{1}{2}", "1.5", False),
    ("31/2", "3.5", False),
    # tuples and intervals, element-wise
    ("(0.5, 1)", "(\\frac{1}{2}, 1)", True),
    ("(1, -2)", "(1,-2)", True),
    ("[1/2, 3)", "[0.5, 3)", True),
    ("(1,2)", "(2,1)", False),
    ("[1, 2)", "(1, 2)", False),
    ("(1, 2, 3)", "(1, 2)", False),
    # unordered sets where braces say so
    ("\\{1, 2, 3\\}", "\\{3, 1, 2\\}", True),
    ("\\{0.5, 2\\}", "\\{2, \\frac12\\}", True),
    ("\\{1, 2\\}", "\\{1, 3\\}", False),
    ("\\{1, 2\\}", "\\{1, 2, 2\\}", False),
    # x = prefix
    ("x = 3", "3", True),
    ("y=\\frac{1}{2}", "0.5", True),
    ("k = 10", "10", True),
    ("x = 3", "3x", False),
    ("3x", "3", False),
    ("x = 3", "-3", False),
    # plain strings and things it cannot decide
    ("\\pi", "\\pi", True),
    ("2\\pi", "2 \\pi", True),
    ("\\infty", "\\infty", True),
    ("2\\pi", "\\pi", False),
    ("\\frac{\\pi}{2}", "\\frac{\\pi}{3}", False),
    ("", "0", False),
    ("abc", "", False),
]


def test_math_table_size_and_negatives() -> None:
    assert len(MATH_TABLE) >= 80
    assert sum(not e for _, _, e in MATH_TABLE) >= 30


@pytest.mark.parametrize(("pred", "gold", "expected"), MATH_TABLE)
def test_math_table(pred: str, gold: str, expected: bool) -> None:
    assert R.math_equal(pred, gold) is expected
    assert R.math_equal(gold, pred) is expected  # symmetric


def test_math_percent_option() -> None:
    assert R.math_equal("50\\%", "0.5", percent=True)
    assert R.math_equal("0.5", "50%", percent=True)
    assert R.math_equal("50\\%", "50", percent=True)
    assert not R.math_equal("50\\%", "0.05", percent=True)


def test_math_extraction_formats() -> None:
    got = R.extract_math_answer(
        [
            "so\nFinal Answer: 42\n",
            "final answer: 1\nFINAL ANSWER: $x = 3$.",
            "Final Answer: The final answer is $7$. I hope it is correct.",
            "a \\boxed{1} then $\\boxed{\\frac{1}{2}}$",
            "\\boxed{3} and an unclosed \\boxed{4",
            "<Summary>Final Answer: 5</Summary>junk",
            "Final Answer:\n\n\\boxed{9}",
            "x" * 400 + "\\boxed{8}" + "y" * 400,  # far from the end: the whole text is searched
            "nothing",
            "\\boxed{}",
        ]
    )
    assert got == ["42", "x = 3", "7", "\\frac{1}{2}", "3", "5", "9", "8", None, None]


def test_math_scores_values_and_golds() -> None:
    responses = ["Final Answer: 1/2", "\\boxed{2}", "", "Final Answer: 3"]
    got = R.math_scores(responses, ["0.5", "\\frac12", "1", ["4", "x=3"]], 1.0, -1.0)
    assert got.tolist() == [1.0, -1.0, -1.0, 1.0]
    assert R.math_scores(responses, ["0.5"] * 4).tolist() == [1.0, 0.0, 0.0, 0.0]


def test_math_corpus_no_false_positives_high_recall() -> None:
    pairs = corpus(seed=0)
    assert len(pairs) >= 2000
    kinds = {p.kind.split("/")[1] for p in pairs}
    assert {"final", "final_x", "boxed", "boxed_dollar", "final_dollar"} <= kinds
    got = R.math_scores([p.response for p in pairs], [p.gold for p in pairs]).tolist()
    false_pos = [p for p, s in zip(pairs, got, strict=True) if s == 1.0 and not p.truth]
    positives = [s for p, s in zip(pairs, got, strict=True) if p.truth]
    assert not false_pos, false_pos[:5]
    assert sum(positives) / len(positives) >= 0.99
    assert sum(not p.truth for p in pairs) >= 1000  # plenty of near misses


def test_math_fallback_never_turns_right_wrong() -> None:
    pytest.importorskip("math_verify")
    pairs = corpus(seed=1, equivalents=1)[::120]
    responses = [p.response for p in pairs] + ["\\boxed{\\sqrt{4}}", "\\boxed{2^{10}}"]
    golds = [p.gold for p in pairs] + ["2", "1024"]
    fast = R.math_scores(responses, golds).tolist()
    slow = R.math_scores(responses, golds, fallback="math_verify").tolist()
    assert all(s == 1.0 for f, s in zip(fast, slow, strict=True) if f == 1.0)
    assert fast[-2:] == [0.0, 0.0] and slow[-2:] == [1.0, 1.0]  # what math-verify adds
    with pytest.raises(r1kit.ArgumentError, match="fallback"):
        R.math_scores(responses, golds, fallback="sympy")  # type: ignore[arg-type]


def test_hostile_inputs_stay_linear() -> None:
    # No-hang guard, not a benchmark: quadratic work on these inputs would take minutes.
    deep = "\\boxed{" + "{" * 100_000 + "1" + "}" * 100_000 + "}"
    big = ("word " * 200_000) + "<answer>Paris</answer> Final Answer: \\frac{1}{2}"
    fracs = "\\boxed{" + "\\frac{" * 50_000 + "1}{2}" * 50_000 + "}"
    opens = "<answer>" * 100_000 + "Final Answer: " + "\\boxed{" * 100_000
    t0 = time.perf_counter()
    assert R.math_scores([deep, big, fracs, opens], ["1", "0.5", "1", "1"]).tolist() == [
        0.0, 1.0, 0.0, 0.0
    ]  # fmt: skip
    assert R.qa_scores([big, opens], ["Paris", "x"]).tolist() == [1.0, 0.0]
    assert time.perf_counter() - t0 < 5.0


# ---------------------------------------------------------------------------------------------
# Parallel format and the Parallel-R1 recipes.

BLOCK_A = "<Parallel><Path>a</Path>\n<Path>b</Path></Parallel>\n<Summary>s</Summary>"
BLOCK_B = "<Parallel><Path>a</Path><Path>b</Path><Summary>s</Summary></Parallel>"
FORMAT_CASES = [
    ("x " + BLOCK_A + " y", True, True, [2], "ok"),
    (BLOCK_B, True, True, [2], "ok"),
    (BLOCK_A + BLOCK_B, True, True, [2, 2], "ok"),
    ("no tags at all", True, False, [], "ok"),
    # After a structural error the parser keeps only the blocks before the failing one.
    ("<Parallel><Path>a</Path></Parallel><Summary>s</Summary>", False, False, [], "single_path"),
    ("<Parallel><Path>a</Path><Path>b</Path></Parallel> end", False, False, [2], "no_summary"),
    ("<Parallel><Path>a</Path><Path>b", False, False, [2], "truncated"),
    ("text </Path>", False, False, [], "stray_close"),
    ("<Path>x</Path>", False, False, [], "path_outside_block"),
    ("<Parallel><Path><Summary>s</Summary></Path></Parallel>", False, False, [], "summary_in_path"),
    (BLOCK_A + " <Parallel><Path>a</Path>", False, True, [2, 1], "truncated"),
    ("", True, False, [], "ok"),
]


def test_parallel_format_text() -> None:
    f = R.parallel_format([c[0] for c in FORMAT_CASES])
    assert f.valid.tolist() == [c[1] for c in FORMAT_CASES]
    assert f.uses_parallel.tolist() == [c[2] for c in FORMAT_CASES]
    assert f.paths == [c[3] for c in FORMAT_CASES]
    assert f.n_blocks.tolist() == [len(c[3]) for c in FORMAT_CASES]
    assert f.status == [c[4] for c in FORMAT_CASES]
    tags = ["[P]", "[/P]", "[T]", "[/T]", "[S]", "[/S]"]
    custom = R.parallel_format(["[P][T]a[/T][T]b[/T][/P][S]s[/S]"], tags=tags)
    assert custom.valid.tolist() == [True] and custom.paths == [[2]]


CORRECT_PAR = BLOCK_A + "\nFinal Answer: 3"
CORRECT_PLAIN = "Just compute.\nFinal Answer: 3"
WRONG_PAR = BLOCK_A + "\nFinal Answer: 4"
CORRECT_BROKEN = "<Parallel><Path>a</Path></Parallel><Summary>s</Summary> Final Answer: 3"


def test_alternating_recipe_steps_1_to_30() -> None:
    reward = R.ParallelR1Reward("alternating", window=10, acc_steps=8, bonus=1.2)
    batch = [CORRECT_PAR, WRONG_PAR, CORRECT_PLAIN, CORRECT_BROKEN]
    golds = ["3"] * 4
    table = [reward(batch, golds, step=s).tolist() for s in range(1, 31)]
    accuracy = [1.0, -1.0, 1.0, 1.0]
    fmt = [pytest.approx(1.2), -1.0, 1.0, -1.0]
    for step, row in enumerate(table, start=1):
        in_window = (step - 1) % 10 + 1
        assert row == (accuracy if in_window <= 8 else fmt), step
    # Window and split are configurable.
    r5 = R.ParallelR1Reward("alternating", window=5, acc_steps=2, bonus=2.0)
    assert [r5([CORRECT_PAR], ["3"], step=s).item() for s in range(1, 7)] == [
        1.0, 1.0, 2.0, 2.0, 2.0, 1.0
    ]  # fmt: skip


def test_accuracy_and_gsm8k_recipes() -> None:
    batch = [CORRECT_PAR, WRONG_PAR, CORRECT_PLAIN, CORRECT_BROKEN]
    acc = R.ParallelR1Reward("accuracy")
    assert acc(batch, ["3"] * 4, step=7).tolist() == [1.0, -1.0, 1.0, 1.0]
    gsm = R.ParallelR1Reward("gsm8k_stage")
    assert gsm(batch, ["3"] * 4, step=1).tolist() == [1.0, 0.0, 0.0, 0.0]
    with pytest.raises(r1kit.ArgumentError, match="step"):
        acc(batch, ["3"] * 4, step=0)
    with pytest.raises(r1kit.ArgumentError, match="recipe"):
        R.ParallelR1Reward("s3")  # type: ignore[arg-type]
    with pytest.raises(r1kit.ArgumentError, match="acc_steps"):
        R.ParallelR1Reward("alternating", window=4, acc_steps=5)


# ---------------------------------------------------------------------------------------------
# Token ids: a tokenizer built here with the `tokenizers` package, tags as special tokens.

TAGS = ["<Parallel>", "</Parallel>", "<Path>", "</Path>", "<Summary>", "</Summary>"]
SPECIAL = ["<pad>", "<answer>", "</answer>", *TAGS]


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    text = [c[0] for c in FORMAT_CASES] + [CORRECT_PAR, "William Shakespeare wrote plays"] * 20
    tok.train_from_iterator(text, trainer)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def _texts() -> list[str]:
    return [
        *[c[0] for c in FORMAT_CASES],
        CORRECT_PAR,
        CORRECT_BROKEN,
        "<answer> William Shakespeare </answer>",
        "<answer>Shakespeare, the playwright</answer> \\boxed{\\frac{1}{2}}",
        "café \u2013 ünïcödé ✓ <answer>Paris</answer>",
        "",
    ]


def _encode(path: Path, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    import tokenizers

    tok = tokenizers.Tokenizer.from_file(str(path))
    rows = [tok.encode(t).ids for t in texts]
    pad = tok.token_to_id("<pad>")
    width = max(len(r) for r in rows) + 3
    ids = torch.full((len(rows), width), pad, dtype=torch.int64)
    mask = torch.zeros(len(rows), width, dtype=torch.int64)
    for i, r in enumerate(rows):
        left = i % 2 == 0  # left padding on even rows, right padding on odd rows
        start = width - len(r) if left else 0
        ids[i, start : start + len(r)] = torch.tensor(r, dtype=torch.int64)
        mask[i, start : start + len(r)] = 1
    return ids, mask, rows


def test_token_path_equals_text_path(tokenizer_json: Path) -> None:
    texts = _texts()
    ids, mask, rows = _encode(tokenizer_json, texts)
    dec = R.TokenDecoder.from_file(str(tokenizer_json))
    assert dec.decode(ids, mask) == texts
    assert dec.decode(rows) == texts
    golds = [["William Shakespeare", "1/2", "3", "Paris"]] * len(texts)
    for metric in ("f1", "em", "contains"):
        want = R.qa_scores(texts, golds, metric)  # type: ignore[arg-type]
        got = R.qa_scores(None, golds, metric, ids=ids, attention_mask=mask, decoder=dec)  # type: ignore[arg-type]
        assert torch.equal(got, want)
    assert torch.equal(
        R.math_scores(None, golds, ids=ids, attention_mask=mask, decoder=dec),
        R.math_scores(texts, golds),
    )
    assert R.extract_math_answer(None, ids=rows, decoder=dec) == R.extract_math_answer(texts)
    assert torch.equal(
        R.qa_format_scores(None, golds, ids=ids, attention_mask=mask, decoder=dec),
        R.qa_format_scores(texts, golds),
    )
    # Parallel format: tag ids looked up in the decoder's vocabulary, or given.
    by_text = R.parallel_format(texts)
    for f in (
        R.parallel_format(ids=ids, attention_mask=mask, decoder=dec),
        R.parallel_format(ids=rows, tags=[dec.token_to_id(t) or 0 for t in TAGS]),
    ):
        assert torch.equal(f.valid, by_text.valid)
        assert torch.equal(f.uses_parallel, by_text.uses_parallel)
        assert f.paths == by_text.paths and f.status == by_text.status
    reward = R.ParallelR1Reward("alternating")
    for step in (1, 9):
        assert torch.equal(
            reward(None, ["3"] * len(texts), step, ids=ids, attention_mask=mask, decoder=dec),
            reward(texts, ["3"] * len(texts), step),
        )


def test_hf_fast_tokenizer_decodes_like_batch_decode(tokenizer_json: Path) -> None:
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json), pad_token="<pad>")
    dec = R.TokenDecoder.from_hf(hf)
    texts = _texts()
    ids, mask, rows = _encode(tokenizer_json, texts)
    for skip in (False, True):
        assert dec.decode(ids, skip_special_tokens=skip) == hf.batch_decode(
            ids, skip_special_tokens=skip
        )
        assert dec.decode(rows, skip_special_tokens=skip) == hf.batch_decode(
            rows, skip_special_tokens=skip
        )
    got = R.qa_scores(None, ["Paris"] * len(texts), ids=ids, attention_mask=mask, decoder=dec)
    assert torch.equal(got, R.qa_scores(texts, ["Paris"] * len(texts)))
    # A tokenizers.Tokenizer object works too.
    import tokenizers

    dec2 = R.TokenDecoder.from_hf(tokenizers.Tokenizer.from_file(str(tokenizer_json)))
    assert dec2.decode(rows) == texts and dec2.vocab_size == dec.vocab_size


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(-3, 420), max_size=40), min_size=1, max_size=4),
    st.booleans(),
)
def test_random_ids_decode_like_the_tokenizers_package(
    tokenizer_json: Path, rows: list[list[int]], skip: bool
) -> None:
    import tokenizers

    tok = tokenizers.Tokenizer.from_file(str(tokenizer_json))
    dec = R.TokenDecoder.from_file(str(tokenizer_json))
    # tokenizers' decode drops ids it does not know; negative ids cannot be passed to it.
    known = [[i for i in r if 0 <= i < tok.get_vocab_size()] for r in rows]
    assert dec.decode(rows, skip_special_tokens=skip) == [
        tok.decode(r, skip_special_tokens=skip) for r in known
    ]


def test_invalid_utf8_from_ids_scores_zero(tokenizer_json: Path) -> None:
    dec = R.TokenDecoder.from_file(tokenizer_json)  # type: ignore[arg-type]
    import tokenizers

    tok = tokenizers.Tokenizer.from_file(str(tokenizer_json))
    # Byte-level tokens of a lone continuation byte and a truncated multi-byte sequence.
    lone = [tok.token_to_id(c) for c in ("\u0100", "Ã")]  # bytes 0x80-ish and 0xC3 alone
    rows = [[i for i in lone if i is not None], [-1, 10**12, 5], []]
    texts = dec.decode(rows)
    assert all(isinstance(t, str) for t in texts)
    golds = ["x", "y", "z"]
    assert R.qa_scores(None, golds, ids=rows, decoder=dec).tolist() == [0.0, 0.0, 0.0]
    assert R.math_scores(None, golds, ids=rows, decoder=dec).tolist() == [0.0, 0.0, 0.0]


# ---------------------------------------------------------------------------------------------
# Bad arguments raise r1kit errors; strange responses score 0.


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(r1kit.ShapeError, match="golds"):
        R.qa_scores(["a", "b"], ["a"])
    with pytest.raises(r1kit.ShapeError, match="golds"):
        R.math_scores(["a"], [])
    with pytest.raises(r1kit.ArgumentError, match=r"golds\[1\]"):
        R.qa_scores(["a", "b"], ["a", []])
    with pytest.raises(r1kit.ArgumentTypeError, match=r"responses\[1\]"):
        R.qa_scores(["a", 3], ["a", "b"])  # type: ignore[list-item]
    with pytest.raises(r1kit.ArgumentTypeError, match=r"golds\[0\]\[1\]"):
        R.math_scores(["a"], [["1", 2]])  # type: ignore[list-item]
    with pytest.raises(r1kit.ArgumentTypeError, match="responses"):
        R.qa_scores("<answer>a</answer>", ["a"])
    with pytest.raises(r1kit.ArgumentError, match="metric"):
        R.qa_scores(["a"], ["a"], "bleu")  # type: ignore[arg-type]
    with pytest.raises(r1kit.ArgumentError, match="path"):
        R.TokenDecoder.from_file(str(tmp_path / "missing.json"))
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"model": {"type": "BPE", "vocab": ')
    with pytest.raises(r1kit.ArgumentError, match="tokenizer"):
        R.TokenDecoder.from_file(str(bad))
    bad.write_text(json.dumps({"not": "a tokenizer"}))
    with pytest.raises(r1kit.ArgumentError, match="tokenizer"):
        R.TokenDecoder.from_file(str(bad))
    with pytest.raises(r1kit.ArgumentTypeError, match="tokenizer"):
        R.TokenDecoder.from_hf(object())


def test_bad_ids(tokenizer_json: Path) -> None:
    dec = R.TokenDecoder.from_file(str(tokenizer_json))
    with pytest.raises(r1kit.DtypeError, match="ids"):
        R.qa_scores(None, ["a"], ids=torch.zeros(1, 4), decoder=dec)
    with pytest.raises(r1kit.ShapeError, match="ids"):
        R.qa_scores(None, ["a"], ids=torch.zeros(4, dtype=torch.int64), decoder=dec)
    with pytest.raises(r1kit.ShapeError, match="attention_mask"):
        dec.decode(torch.zeros(2, 4, dtype=torch.int64), torch.ones(2, 3))
    with pytest.raises(r1kit.ShapeError, match="golds"):
        R.qa_scores(None, ["a"], ids=torch.zeros(2, 4, dtype=torch.int64), decoder=dec)
    with pytest.raises(r1kit.ArgumentTypeError, match="decoder"):
        R.qa_scores(None, ["a"], ids=torch.zeros(1, 4, dtype=torch.int64))
    with pytest.raises(r1kit.ArgumentTypeError, match="ids"):
        R.qa_scores(["x"], ["a"], ids=torch.zeros(1, 4, dtype=torch.int64), decoder=dec)
    with pytest.raises(r1kit.ArgumentTypeError, match=r"ids\[0\]\[1\]"):
        dec.decode([[1, "2"]])  # type: ignore[list-item]
    with pytest.raises(r1kit.ArgumentTypeError, match="tags"):
        R.parallel_format(ids=[[1, 2]])
    with pytest.raises(r1kit.ArgumentError, match="tags"):
        R.parallel_format(ids=[[1, 2]], tags=[1, 2, 3])
    with pytest.raises(r1kit.ArgumentError, match="path_end"):
        R.parallel_format(ids=[[1, 2]], tags=[1, 2, 3, 3, 5, 6])


STRANGE = [
    "",
    "\x00\x01\x02\xff\ufffd" * 50,
    "".join(chr(c) for c in range(0x20, 0x3000, 7)),
    "<answer></answer>" * 3,
    "</answer><answer>",
    "<Parallel></Parallel></Path><Summary>",
    "\\boxed{" * 50 + "}" * 10,
    "Final Answer:",
    "Final Answer: \\frac{}{}",
    "\\boxed{1/0}",
    "\ud800 lone surrogate",
]


def test_strange_responses_score_zero() -> None:
    golds = ["1"] * len(STRANGE)
    for metric in ("f1", "em", "contains"):
        assert R.qa_scores(STRANGE, golds, metric).tolist() == [0.0] * len(STRANGE)  # type: ignore[arg-type]
    assert R.math_scores(STRANGE, golds).tolist() == [0.0] * len(STRANGE)
    # Search-R1: an (empty) answer that is wrong, in a malformed response, gets final_format_score.
    has_answer = [a is not None for a in R.extract_answer(STRANGE)]
    assert has_answer == [i == 3 for i in range(len(STRANGE))]
    want = torch.tensor([0.1 if a else 0.0 for a in has_answer])
    torch.testing.assert_close(R.qa_format_scores(STRANGE, golds), want)
    f = R.parallel_format(STRANGE)
    assert f.uses_parallel.tolist() == [False] * len(STRANGE)
    r = R.ParallelR1Reward("alternating")
    assert r(STRANGE, golds, 9).tolist() == [-1.0] * len(STRANGE)


def test_same_results_whatever_the_thread_count(restore_threads: None) -> None:
    pairs = corpus(seed=3, equivalents=1)
    responses, golds = [p.response for p in pairs], [p.gold for p in pairs]
    qa = [f"<answer>{p.gold} {i}</answer>" for i, p in enumerate(pairs)]
    out = []
    for n in (1, 2, 3):
        r1kit.set_num_threads(n)
        out.append((R.math_scores(responses, golds), R.qa_scores(qa, golds)))
    for m, q in out[1:]:
        assert torch.equal(m, out[0][0]) and torch.equal(q, out[0][1])


def test_memoized_batch_equals_per_response_judging(restore_threads: None) -> None:
    # A batch judges each distinct (answer, golds) pair once; it must give what one call per
    # response gives. Answers repeat across formats (equal extracted answers from differently
    # formatted responses), golds repeat as one shared object and as equal distinct str objects.
    import random

    rng = random.Random(5)
    pairs = corpus(seed=4, equivalents=1)
    answers = [
        "1/2",
        "\\frac{1}{2}",
        "0.5",
        "3",
        "x = 3",
        "(1, 2)",
        "10\\%",
        "0.1",
        "{",
        "",
        "0." + "0" * 60,
    ]
    formats = [
        "reasoning\nFinal Answer: {}\n",
        "so $\\boxed{{{}}}$",
        "Final Answer: The final answer is ${}$. I hope it is correct.",
        "<Summary>Final Answer: {}</Summary>",
        "no answer here {}",
    ]
    shared = ["0.5", "3", "(1,2)", "10%", "7.0"]

    def fresh(s: str) -> str:
        """Equal content in another str object (CPython caches one-character strings)."""
        return (s + " ")[:-1]

    assert fresh("0.5") is not fresh("0.5")
    responses: list[str] = []
    golds: list[str | list[str]] = []
    for i in range(3000):
        if i % 3 == 0:
            p = rng.choice(pairs)
            responses.append(p.response)
            golds.append(p.gold if rng.random() < 0.5 else fresh(p.gold))
        else:
            responses.append(rng.choice(formats).format(rng.choice(answers)))
            g = rng.choice(shared)
            distinct = fresh(g)
            golds.append(rng.choice([g, distinct, [g, rng.choice(shared)], (distinct,)]))
    assert len(set(responses)) < len(responses) / 2
    for percent in (False, True):
        one_by_one = [
            R.math_scores([r], [g], percent=percent).item()
            for r, g in zip(responses, golds, strict=True)
        ]
        codes_one = [
            _core.math_judge([r], [g], percent, None, None, None)[0][0]
            for r, g in zip(responses, golds, strict=True)
        ]
        for n in (1, 2, 3):
            r1kit.set_num_threads(n)
            assert R.math_scores(responses, golds, percent=percent).tolist() == one_by_one
            assert _core.math_judge(responses, golds, percent, None, None, None)[0] == codes_one
    assert {1, 0, -1} <= set(codes_one)


def test_fraction_reference_agrees_on_numbers() -> None:
    # Exact rationals: every p/q written as a decimal equals the fraction, never a neighbour.
    for q in (2, 4, 5, 8, 16, 20, 25, 40):
        for p in range(-30, 31):
            f = Fraction(p, q)
            dec = f"{float(f):.6f}".rstrip("0")
            assert R.math_equal(dec, f"\\frac{{{p}}}{{{q}}}")
            assert not R.math_equal(dec, f"\\frac{{{p + 1}}}{{{q}}}")
