"""Rewards over whole batches: QA F1 / EM, math accuracy, Parallel-R1 format and recipes.

Every function takes a batch of N responses, as a list of str or as token ids (``ids=`` an
``[N, L]`` integer tensor with ``attention_mask=``, or a list of id lists, plus ``decoder=`` a
:class:`TokenDecoder`), and scores it in Rust, in parallel, without the GIL. Scores come back as a
float32 tensor ``[N]``. A response that cannot be read (empty, garbage, unclosed tags) scores as
"no answer"; only bad arguments raise (an :class:`r1kit.R1KitError`). Definitions:
``shared/spec/rewards.md``.

Example:
    >>> from r1kit import rewards
    >>> rewards.qa_scores(["<answer> William Shakespeare </answer>",
    ...                     "<answer>Shakespeare, the playwright</answer>"],
    ...                    [["William Shakespeare", "Shakespeare"], "William Shakespeare"])
    tensor([1.0000, 0.5000])
    >>> rewards.math_scores(["... Final Answer: x = 0.5", "\\\\boxed{\\\\frac{1}{3}}"],
    ...                     ["\\\\frac12", "3"])
    tensor([1., 0.])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from r1kit import _core
from r1kit._core import TokenDecoder
from r1kit.errors import ArgumentError

__all__ = [
    "Golds",
    "Ids",
    "ParallelFormat",
    "ParallelR1Reward",
    "QaDetails",
    "TokenDecoder",
    "extract_answer",
    "extract_math_answer",
    "math_equal",
    "math_scores",
    "normalize_answer",
    "normalize_math_answer",
    "parallel_format",
    "qa_format_scores",
    "qa_scores",
    "qa_scores_detailed",
]

Golds = Sequence[str | Sequence[str]]
"""One gold answer, or a list of acceptable gold answers, per response."""
Ids = torch.Tensor | Sequence[Sequence[int]]
"""Token ids: an integer tensor ``[N, L]`` (with ``attention_mask``) or a list of id lists."""
Metric = Literal["f1", "em", "contains"]


def extract_answer(
    responses: Sequence[str] | None,
    *,
    ids: Ids | None = None,
    attention_mask: torch.Tensor | None = None,
    decoder: TokenDecoder | None = None,
) -> list[str | None]:
    """The stripped content of each response's last ``<answer>...</answer>`` (None: no answer).

    Only the response is read (never a prompt: pass responses alone). An ``<answer>`` pairs with
    the first ``</answer>`` after it, as the references' non-greedy regex does.

    Example:
        >>> extract_answer(["<answer>Marlowe</answer> <answer> Shakespeare </answer>", "<answer>x"])
        ['Shakespeare', None]
    """
    return _core.extract_answer(responses, ids, attention_mask, decoder)


def normalize_answer(s: str, unicode: bool = False) -> str:
    """SQuAD normalization: lowercase, drop punctuation and the words a / an / the, fold spaces.

    ``unicode=True`` also folds accents (NFKD without combining marks) and drops Unicode
    punctuation; off by default to match the reference numbers.

    Example:
        >>> normalize_answer("The  Eiffel-Tower, in Paris!")
        'eiffeltower in paris'
        >>> normalize_answer("« Café »", unicode=True)
        'cafe'
    """
    return _core.normalize_answer(s, unicode)


def qa_scores(
    responses: Sequence[str] | None,
    golds: Golds,
    metric: Metric = "f1",
    unicode: bool = False,
    *,
    ids: Ids | None = None,
    attention_mask: torch.Tensor | None = None,
    decoder: TokenDecoder | None = None,
) -> torch.Tensor:
    """QA rewards (ZeroSearch, Search-R1): the metric of the last ``<answer>`` against the golds.

    Args:
        responses: N responses (or None with ``ids=`` and ``decoder=``).
        golds: one str or a list of str per response; the score is the max over them. A gold that
            normalizes to "" never matches.
        metric: ``"f1"`` (token F1), ``"em"`` (normalized strings equal) or ``"contains"``
            (normalized gold inside the normalized answer: ZeroSearch's logged "EM").
        unicode: accent folding and Unicode punctuation in the normalization.
        ids, attention_mask, decoder: token ids instead of text, decoded in Rust.

    Returns:
        float32 tensor ``[N]``; 0 where there is no answer.

    Raises:
        ShapeError: if there is not one gold entry per response.
        ArgumentError: for an empty gold list or an unknown metric.
        ArgumentTypeError: for items that are not str.

    Example:
        >>> r = ["<answer>it was William Shakespeare in 1600</answer>"]
        >>> [qa_scores(r, ["William Shakespeare"], m).item() for m in ("f1", "em", "contains")]
        [0.5, 0.0, 1.0]
    """
    scores, _ = _core.qa_scores(responses, golds, metric, unicode, ids, attention_mask, decoder)
    return scores


@dataclass(frozen=True)
class QaDetails:
    """QA scores with what they were computed from."""

    scores: torch.Tensor
    """float32 ``[N]``."""
    answers: list[str | None]
    """The extracted answers (None: no ``<answer>`` block)."""
    no_answer: torch.Tensor
    """bool ``[N]``: True where no answer was found."""


def qa_scores_detailed(
    responses: Sequence[str] | None,
    golds: Golds,
    metric: Metric = "f1",
    unicode: bool = False,
    *,
    ids: Ids | None = None,
    attention_mask: torch.Tensor | None = None,
    decoder: TokenDecoder | None = None,
) -> QaDetails:
    """:func:`qa_scores` plus the extracted answers and a ``no_answer`` flag.

    Example:
        >>> d = qa_scores_detailed(["<answer>Paris</answer>", "no tags"], ["Paris", "Paris"])
        >>> d.scores, d.answers, d.no_answer
        (tensor([1., 0.]), ['Paris', None], tensor([False,  True]))
    """
    scores, answers = _core.qa_scores(
        responses, golds, metric, unicode, ids, attention_mask, decoder
    )
    no_answer = torch.tensor([a is None for a in answers], dtype=torch.bool)
    return QaDetails(scores, answers, no_answer)


def qa_format_scores(
    responses: Sequence[str] | None,
    golds: Golds,
    metric: Metric = "em",
    unicode: bool = False,
    *,
    structure_score: float = 0.2,
    final_format_score: float = 0.1,
    ids: Ids | None = None,
    attention_mask: torch.Tensor | None = None,
    decoder: TokenDecoder | None = None,
) -> torch.Tensor:
    """Search-R1's format-aware QA reward.

    Well formed means the response follows ``<think>`` .. (``<search>`` .. ``<information>`` ..
    ``<think>`` ..)* .. ``<answer>..</answer>`` with nothing but whitespace between tags. Correct
    (the metric reaches 1) and well formed: 1; correct but malformed: ``1 - structure_score``;
    wrong but well formed: ``structure_score``; a wrong answer, malformed: ``final_format_score``;
    no answer and malformed: 0.

    Example:
        >>> qa_format_scores(["<think>t</think><answer>Paris</answer>", "<answer>Paris</answer>",
        ...                   "<think>t</think><answer>Rome</answer>", "<answer>Rome</answer>"],
        ...                  ["Paris"] * 4)
        tensor([1.0000, 0.8000, 0.2000, 0.1000])
    """
    return _core.qa_format_scores(
        responses,
        golds,
        metric,
        unicode,
        structure_score,
        final_format_score,
        ids,
        attention_mask,
        decoder,
    )


def extract_math_answer(
    responses: Sequence[str] | None,
    *,
    ids: Ids | None = None,
    attention_mask: torch.Tensor | None = None,
    decoder: TokenDecoder | None = None,
) -> list[str | None]:
    """Each response's answer: the last ``Final Answer:`` line, else the last ``\\boxed{}``.

    The line is matched case-insensitively; its ``\\boxed{}`` or first ``$...$`` is taken when it
    has one, and Minerva's "The final answer is ... I hope it is correct." is unwrapped. Tags
    (``<Summary>``, ``</think>``, ...) are removed first. The whole response is searched.

    Example:
        >>> extract_math_answer(["Final answer: $x = 3$", "so \\\\boxed{\\\\frac{1}{2}}.", "none"])
        ['x = 3', '\\\\frac{1}{2}', None]
    """
    return _core.extract_math_answer(responses, ids, attention_mask, decoder)


def normalize_math_answer(s: str) -> str:
    """The canonical string the fast path compares (spaces, wrappers and units removed).

    Example:
        >>> normalize_math_answer("\\\\left( \\\\dfrac12, 90^\\\\circ \\\\right)")
        '(\\\\frac{1}{2},90)'
    """
    return _core.normalize_math_answer(s)


def math_equal(pred: str, gold: str, *, percent: bool = False) -> bool:
    """Whether two answer strings are equivalent (the fast path; undecided means not equal).

    Numbers compare as exact rationals (``0.5 == 1/2 == \\frac{1}{2}``), with leading ``+`` or
    zeros, mixed numbers (``3\\frac{1}{2}``), thousands separators; tuples and intervals compare
    element-wise, ``\\{...\\}`` sets unordered; ``x = 3`` equals ``3``. ``percent=True`` also makes
    ``50\\%`` equal ``0.5`` (by default ``50\\%`` equals ``50``).

    Example:
        >>> math_equal("0.5", "\\\\frac{1}{2}"), math_equal("(1,2)", "(2,1)")
        (True, False)
        >>> math_equal("x = 3", "3"), math_equal("x=3", "3x")
        (True, False)
    """
    return _core.math_equal(pred, gold, percent)


def math_scores(
    responses: Sequence[str] | None,
    golds: Golds,
    correct: float = 1.0,
    incorrect: float = 0.0,
    fallback: Literal["math_verify"] | None = None,
    *,
    percent: bool = False,
    timeout: float = 5.0,
    ids: Ids | None = None,
    attention_mask: torch.Tensor | None = None,
    decoder: TokenDecoder | None = None,
) -> torch.Tensor:
    """Math accuracy rewards: ``correct`` where the answer equals a gold, else ``incorrect``.

    Args:
        responses: N responses (or None with ``ids=`` and ``decoder=``).
        golds: one gold answer (or a list of them) per response.
        correct, incorrect: the two reward values (Parallel-R1 uses +1 / -1).
        fallback: ``"math_verify"`` re-checks the responses the fast path did not find correct
            with HF math-verify (if installed), in a process pool with a per-sample ``timeout``
            (no signals in this process's threads). It can only turn "incorrect" into "correct".
        percent: ``50\\%`` also equals ``0.5``.

    Raises:
        ShapeError: if there is not one gold entry per response.
        ArgumentError: for an empty gold list, an unknown fallback or a missing math-verify.

    Example:
        >>> responses = ["Final Answer: 1/2", "\\\\boxed{2}", ""]
        >>> math_scores(responses, ["0.5", "\\\\frac12", "1"], 1.0, -1.0)
        tensor([ 1., -1., -1.])
    """
    if fallback is None:
        return _core.math_scores(
            responses, golds, correct, incorrect, percent, ids, attention_mask, decoder
        )
    if fallback != "math_verify":
        raise ArgumentError(f"`fallback`: expected None or 'math_verify', got {fallback!r}")
    from r1kit import _math_verify

    codes, answers = _core.math_judge(responses, golds, percent, ids, attention_mask, decoder)
    retry = [i for i, c in enumerate(codes) if c != 1]
    if retry:
        texts: Sequence[str]
        if responses is not None:
            texts = responses
        else:
            if decoder is None:  # pragma: no cover - _core.math_judge raised already
                raise ArgumentError("`decoder`: expected a TokenDecoder when ids= is given")
            texts = decoder.decode(ids if ids is not None else [], attention_mask)
        gold_lists = [[g] if isinstance(g, str) else list(g) for g in golds]
        jobs = [
            (answers[i], texts[i] if answers[i] is None else None, gold_lists[i]) for i in retry
        ]
        for i, ok in zip(retry, _math_verify.verify_batch(jobs, timeout), strict=True):
            if ok:
                codes[i] = 1
    return torch.tensor([correct if c == 1 else incorrect for c in codes], dtype=torch.float32)


@dataclass(frozen=True)
class ParallelFormat:
    """Parallel-R1 format verdicts of a batch (see :func:`parallel_format`)."""

    valid: torch.Tensor
    """bool ``[N]``: every block closed, >= 2 paths, a summary after or inside it, no error."""
    uses_parallel: torch.Tensor
    """bool ``[N]``: at least one valid block."""
    n_blocks: torch.Tensor
    """int64 ``[N]``: blocks found (nested ones included)."""
    paths: list[list[int]]
    """Paths of each block, in order of their ``<Parallel>``."""
    status: list[str]
    """The structure parser's status (``ok``, ``truncated``, ``stray_close``, ``single_path``,
    ...) or ``no_summary``."""


def parallel_format(
    responses: Sequence[str] | None = None,
    *,
    ids: Ids | None = None,
    attention_mask: torch.Tensor | None = None,
    tags: Sequence[str] | Sequence[int] | None = None,
    decoder: TokenDecoder | None = None,
) -> ParallelFormat:
    """The Parallel-R1 format of each response, through r1kit's one structure parser.

    From text, ``tags`` are the six tag strings (default ``<Parallel> </Parallel> <Path> </Path>
    <Summary> </Summary>``); from ``ids``, the six tag token ids (default: looked up in
    ``decoder``'s vocabulary). Both give the same verdict for the same content. A response with
    no tags is valid but does not use parallel thinking.

    Example:
        >>> f = parallel_format(["<Parallel><Path>a</Path><Path>b</Path></Parallel>"
        ...                      "<Summary>s</Summary> Final Answer: 3", "plain",
        ...                      "<Parallel><Path>a"])
        >>> f.valid.tolist(), f.uses_parallel.tolist(), f.paths, f.status
        ([True, True, False], [True, False, False], [[2], [], [1]], ['ok', 'ok', 'truncated'])
    """
    valid, uses, n_blocks, paths, status = _core.parallel_format(
        responses, ids, attention_mask, tags, decoder
    )
    return ParallelFormat(
        torch.tensor(valid, dtype=torch.bool),
        torch.tensor(uses, dtype=torch.bool),
        torch.tensor(n_blocks, dtype=torch.int64),
        paths,
        status,
    )


Recipe = Literal["accuracy", "gsm8k_stage", "alternating"]


class ParallelR1Reward:
    """Parallel-R1's reward recipes by training step (steps count from 1).

    - ``"accuracy"`` (S1): +1 correct, -1 otherwise.
    - ``"gsm8k_stage"``: 1 if correct, using parallel thinking and valid, else 0.
    - ``"alternating"`` (S2): in each window of ``window`` steps the first ``acc_steps`` use
      accuracy; the others give ``bonus`` if correct, parallel and valid, 1.0 if correct without
      any block, -1.0 otherwise (a correct answer with a malformed block is -1).

    Correctness is :func:`math_scores`' fast path; the format is :func:`parallel_format`'s.

    Example:
        >>> reward = ParallelR1Reward("alternating", window=10, acc_steps=8, bonus=1.2)
        >>> good = "<Parallel><Path>a</Path><Path>b</Path></Parallel><Summary>s</Summary>"
        >>> responses = [good + " Final Answer: 3", "Final Answer: 3", "Final Answer: 4"]
        >>> reward(responses, ["3", "3", "3"], step=1), reward(responses, ["3", "3", "3"], step=9)
        (tensor([ 1.,  1., -1.]), tensor([ 1.2000,  1.0000, -1.0000]))
    """

    def __init__(
        self,
        recipe: Recipe = "accuracy",
        window: int = 10,
        acc_steps: int = 8,
        bonus: float = 1.2,
        *,
        tags: Sequence[str] | Sequence[int] | None = None,
    ) -> None:
        _core.parallel_r1_recipe(recipe, window, acc_steps, bonus)
        self.recipe = recipe
        self.window = window
        self.acc_steps = acc_steps
        self.bonus = bonus
        self.tags = tags

    def __call__(
        self,
        responses: Sequence[str] | None,
        golds: Golds,
        step: int,
        *,
        ids: Ids | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder: TokenDecoder | None = None,
    ) -> torch.Tensor:
        """Rewards ``[N]`` (float32) of a batch at training ``step`` (>= 1)."""
        return _core.parallel_r1_rewards(
            self.recipe,
            self.window,
            self.acc_steps,
            self.bonus,
            responses,
            golds,
            step,
            ids,
            attention_mask,
            decoder,
            self.tags,
        )

    def __repr__(self) -> str:
        return (
            f"ParallelR1Reward({self.recipe!r}, window={self.window}, "
            f"acc_steps={self.acc_steps}, bonus={self.bonus})"
        )
