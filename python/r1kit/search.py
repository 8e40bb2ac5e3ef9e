"""Simulated search (ZeroSearch): simulators, multi-turn rollouts, the observation loss mask.

ZeroSearch trains a policy to use a search engine without calling one: a *simulator* writes ``k``
documents per query, useful or noisy, and the share of noisy calls rises on a curriculum
(:class:`r1kit.NoiseSchedule`). This module is that environment as a library piece any trainer can
drive:

- :class:`SimRequest` and the :class:`Simulator` protocol (a batch of requests in, one documents
  text per request out), with two simulators: :class:`LLMSimulator` (any ``list[str] ->
  list[str]`` generate function: a local HF model via :meth:`LLMSimulator.from_hf`, or a remote
  endpoint) and :class:`CorpusSimulator` (a table of facts, no model, deterministic).
- :class:`SearchEnv`, whose :meth:`SearchEnv.rollout` runs the multi-turn loop: generate with stop
  strings, ``<search>`` appends the simulator's ``<information>`` block, ``<answer>`` ends the
  row, anything else gets an "invalid action" observation; after ``max_turns`` turns one final
  generation without search. Noise draws are per call and deterministic in ``(seed, step, key,
  turn)``. The result, :class:`SearchRollout`, holds token ids, masks, per-turn actions and
  queries, noisy flags, answers and F1 rewards.
- :func:`observation_mask` (Rust): the loss mask from token ids, 0 on every observation token.

Example:
    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> import r1kit
    >>> from r1kit.search import CorpusSimulator, SearchEnv
    >>> tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    >>> tok.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> _ = tok.add_special_tokens(list(r1kit.search.TAGS))
    >>> sim = CorpusSimulator([("France", "capital", "Paris")], k=2)
    >>> env = SearchEnv(sim, r1kit.NoiseSchedule(0.0, 0.0, 10), tok, max_turns=1)
    >>> def policy(contexts, stop):
    ...     return ["<search>capital of France</search>" if "<information>" not in c
    ...             else "<answer>Paris</answer>" for c in contexts]
    >>> out = env.rollout(policy, ["Q: capital of France?"], ["capital of France?"], ["Paris"], 1)
    >>> out.actions, out.rewards
    ([['search', 'answer']], tensor([1.]))
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from r1kit import _core
from r1kit.curriculum import NoiseSchedule, TensorPath, hash_key
from r1kit.errors import ArgumentError, ArgumentTypeError, R1KitError, ShapeError
from r1kit.rewards import Golds, extract_answer, normalize_answer, qa_scores

__all__ = [
    "INFO_CLOSE",
    "INFO_OPEN",
    "INVALID_ACTION_MESSAGE",
    "NOISY_TEMPLATE",
    "OBS_AFTER",
    "OBS_BEFORE",
    "STOP",
    "TAGS",
    "USEFUL_TEMPLATE",
    "Action",
    "CorpusSimulator",
    "GenerateFn",
    "LLMSimulator",
    "SearchEnv",
    "SearchRollout",
    "SimRequest",
    "Simulator",
    "SimulatorError",
    "format_documents",
    "observation_mask",
    "parse_documents",
    "spans_mask",
]

INFO_OPEN = "<information>"
INFO_CLOSE = "</information>"
TAGS = (
    "<think>",
    "</think>",
    "<search>",
    "</search>",
    INFO_OPEN,
    INFO_CLOSE,
    "<answer>",
    "</answer>",
)
"""The protocol's tags; the two information tags must be single tokens of the tokenizer."""
STOP = ("</search>", "</answer>")
"""Stop strings of every policy generation (the text is also cut after the first one)."""
OBS_BEFORE = "\n\n"
"""Text the environment writes before each ``<information>`` (part of the observation)."""
OBS_AFTER = "\n\n"
"""Text the environment writes after each ``</information>`` (part of the observation)."""
INVALID_ACTION_MESSAGE = (
    "My previous action is invalid. To search, I should put the query between <search> and "
    "</search>. To answer, I should put the answer between <answer> and </answer>. "
    "Let me try again."
)
"""Observation (inside the information tags) after a turn with neither search nor answer."""

USEFUL_TEMPLATE = (
    "You are a search engine. Given a search query, write {k} documents of about 30 words "
    "each that help answer it.\n"
    "The query comes from research on the question: {question}\n"
    "The answer to that question is: {answer}\n"
    "Write documents that contain the facts needed to reach this answer.\n"
    "Query: {query}\n"
    "Reply with exactly {k} lines, 'Doc 1: ...' to 'Doc {k}: ...', and nothing else."
)
"""Default prompt of a useful call (fields: ``k``, ``query``, ``question``, ``answer``)."""
NOISY_TEMPLATE = (
    "You are a search engine. Given a search query, write {k} documents of about 30 words "
    "each that look related to it but do not help answer it.\n"
    "Query: {query}\n"
    "Reply with exactly {k} lines, 'Doc 1: ...' to 'Doc {k}: ...', and nothing else."
)
"""Default prompt of a noisy call: neither the question nor the answer (the untuned variant)."""

Action = Literal["search", "answer", "invalid"]
GenerateFn = Callable[[list[str], list[str]], list[str]]
"""The policy: ``(contexts, stop_strings) -> continuations``, one str per context."""


class SimulatorError(R1KitError, RuntimeError):
    """A simulator failed or returned unusable documents; names the row and turn.

    Attributes:
        row: Batch row of the failing request (None when the whole call failed).
        turn: Turn of the failing call (None when unknown).
    """

    def __init__(self, message: str, row: int | None = None, turn: int | None = None) -> None:
        super().__init__(message)
        self.row = row
        self.turn = turn


@dataclass(frozen=True)
class SimRequest:
    """One search call: the query and the row's own question and answer.

    Attributes:
        query: What the policy wrote between ``<search>`` and ``</search>``.
        question: The question of the row that searched.
        answer: Its (first) gold answer.
        noisy: True when this call must return noisy documents.
        row: Batch row of the call (for error messages).
        turn: Turn of the call.
        golds: Every gold answer of the row (noisy documents must contain none).
    """

    query: str
    question: str
    answer: str
    noisy: bool
    row: int = 0
    turn: int = 0
    golds: tuple[str, ...] = ()

    def where(self) -> str:
        """The request's place for error messages: row, turn and query."""
        return f"row {self.row}, turn {self.turn}, query {self.query!r}"


@runtime_checkable
class Simulator(Protocol):
    """Writes documents for a batch of search calls: one documents text per request."""

    def __call__(self, requests: list[SimRequest]) -> list[str]: ...


_DOC = re.compile(r"(?:^|\n)[ \t*#>-]*Doc\s*(\d+)\s*[:.)]", re.IGNORECASE)


def parse_documents(text: str) -> list[str]:
    """The documents of a simulator output: the text after each ``Doc i:`` marker (line start).

    A document runs to the next marker; its whitespace is folded to single spaces; empty
    documents are dropped. Numbers are not checked: documents come in the order written.

    Example:
        >>> parse_documents("Sure!\\nDoc 1: Paris is the capital.\\nDoc 2:  It is in\\n France.")
        ['Paris is the capital.', 'It is in France.']
    """
    marks = list(_DOC.finditer(text))
    docs = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        doc = " ".join(text[m.end() : end].split())
        if doc:
            docs.append(doc)
    return docs


def format_documents(docs: Sequence[str]) -> str:
    """Numbers documents as ``Doc 1: ...`` lines, the format of every observation.

    Example:
        >>> print(format_documents(["a.", "b."]))
        Doc 1: a.
        Doc 2: b.
    """
    return "\n".join(f"Doc {i + 1}: {d}" for i, d in enumerate(docs))


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise ArgumentTypeError(f"`k`: expected an int, got {type(k).__name__}")
    if k < 1:
        raise ArgumentError(f"`k`: expected at least 1 document per call, got {k}")
    return k


def _check_template(template: object, name: str) -> str:
    if not isinstance(template, str):
        raise ArgumentTypeError(f"`{name}`: expected a str, got {type(template).__name__}")
    try:
        template.format(k=1, query="q", question="q", answer="a")
    except (KeyError, IndexError, ValueError) as e:
        raise ArgumentError(
            f"`{name}`: expected a format string with fields among {{k}}, {{query}}, "
            f"{{question}}, {{answer}}, got one that fails: {e!r}"
        ) from None
    if "{query}" not in template:
        raise ArgumentError(f"`{name}`: expected a template containing {{query}}, got {template!r}")
    return template


class LLMSimulator:
    """A simulator backed by a text generator (a simulation LLM).

    Builds one prompt per request from ``useful_template`` or ``noisy_template`` (fields ``k``,
    ``query``, ``question``, ``answer``), calls ``generate`` once for the batch, and keeps exactly
    ``k`` documents of each output (:func:`parse_documents`; extra ones are dropped).

    Args:
        generate: ``list[str] -> list[str]``, one completion per prompt: a local model
            (:meth:`from_hf`) or a remote endpoint, e.g. an OpenAI-compatible server::

                def generate(prompts):
                    return [client.completions.create(model="sim", prompt=p,
                                                      max_tokens=256).choices[0].text
                            for p in prompts]

        k: Documents per call.
        useful_template: Prompt of useful calls.
        noisy_template: Prompt of noisy calls.

    Raises:
        SimulatorError: (on call) ``generate`` raised, returned the wrong number of outputs or a
            non-str, or an output has fewer than ``k`` documents; the message names the request.

    Example:
        >>> fake = lambda prompts: ["Doc 1: a.\\nDoc 2: b.\\nDoc 3: c."] * len(prompts)
        >>> sim = LLMSimulator(fake, k=2)
        >>> sim([SimRequest("capital of France", "What is the capital of France?", "Paris", False)])
        ['Doc 1: a.\\nDoc 2: b.']
    """

    def __init__(
        self,
        generate: Callable[[list[str]], list[str]],
        k: int = 5,
        useful_template: str = USEFUL_TEMPLATE,
        noisy_template: str = NOISY_TEMPLATE,
    ) -> None:
        if not callable(generate):
            raise ArgumentTypeError(
                f"`generate`: expected a callable list[str] -> list[str], "
                f"got {type(generate).__name__}"
            )
        self.generate = generate
        self.k = _check_k(k)
        self.useful_template = _check_template(useful_template, "useful_template")
        self.noisy_template = _check_template(noisy_template, "noisy_template")

    def prompt(self, request: SimRequest) -> str:
        """The simulator prompt of one request."""
        template = self.noisy_template if request.noisy else self.useful_template
        return template.format(
            k=self.k, query=request.query, question=request.question, answer=request.answer
        )

    def __call__(self, requests: list[SimRequest]) -> list[str]:
        if not requests:
            return []
        prompts = [self.prompt(r) for r in requests]
        try:
            outputs = self.generate(prompts)
        except Exception as e:
            rows = sorted({r.row for r in requests})
            raise SimulatorError(
                f"simulator generate failed on turn {requests[0].turn} for rows {rows}: {e!r}",
                rows[0] if len(rows) == 1 else None,
                requests[0].turn,
            ) from e
        if not isinstance(outputs, (list, tuple)) or len(outputs) != len(requests):
            got = len(outputs) if isinstance(outputs, (list, tuple)) else type(outputs).__name__
            raise SimulatorError(
                f"simulator generate: expected {len(requests)} outputs (one per prompt), got {got}"
            )
        docs = []
        for i, (req, out) in enumerate(zip(requests, outputs, strict=True)):
            if not isinstance(out, str):
                raise SimulatorError(
                    f"simulator output {i} ({req.where()}): expected a str, "
                    f"got {type(out).__name__}",
                    req.row,
                    req.turn,
                )
            parsed = parse_documents(out)
            if len(parsed) < self.k:
                raise SimulatorError(
                    f"simulator output {i} ({req.where()}): expected {self.k} documents "
                    f"'Doc 1: ...' to 'Doc {self.k}: ...', found {len(parsed)} in {out[:200]!r}",
                    req.row,
                    req.turn,
                )
            docs.append(format_documents(parsed[: self.k]))
        return docs

    @classmethod
    def from_hf(
        cls,
        model: Any,
        tokenizer: Any,
        k: int = 5,
        *,
        max_new_tokens: int = 256,
        chat: bool | None = None,
        useful_template: str = USEFUL_TEMPLATE,
        noisy_template: str = NOISY_TEMPLATE,
        **generate_kwargs: Any,
    ) -> LLMSimulator:
        """A simulator running a Hugging Face causal LM (e.g. ZeroSearch's fine-tuned simulator).

        Prompts are wrapped in the tokenizer's chat template when it has one (``chat=None``) or
        when ``chat=True``, left-padded, and generated in one ``model.generate`` call (greedy
        unless ``generate_kwargs`` say otherwise); only the new tokens are decoded.

        Args:
            model: A ``transformers`` causal LM (anything with ``generate`` and ``device``).
            tokenizer: Its tokenizer.
            k: Documents per call.
            max_new_tokens: Generation budget per call.
            chat: Use the chat template (default: when the tokenizer has one).
            useful_template: Prompt of useful calls.
            noisy_template: Prompt of noisy calls.
            **generate_kwargs: Passed to ``model.generate``.
        """
        use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            pad_id = tokenizer.eos_token_id

        def generate(prompts: list[str]) -> list[str]:
            if use_chat:
                texts = [
                    tokenizer.apply_chat_template(
                        [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
                    )
                    for p in prompts
                ]
            else:
                texts = list(prompts)
            side = tokenizer.padding_side
            tokenizer.padding_side = "left"
            try:
                enc = tokenizer(
                    texts, return_tensors="pt", padding=True, add_special_tokens=not use_chat
                )
            finally:
                tokenizer.padding_side = side
            enc = {name: t.to(model.device) for name, t in enc.items()}
            kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False, "pad_token_id": pad_id}
            kwargs.update(generate_kwargs)
            with torch.no_grad():
                out = model.generate(**enc, **kwargs)
            new = out[:, enc["input_ids"].shape[1] :]
            return [str(t) for t in tokenizer.batch_decode(new, skip_special_tokens=True)]

        return cls(generate, k, useful_template, noisy_template)


_USEFUL_DOCS = (
    "The {relation} of {entity} is {value}.",
    "{value} is the {relation} of {entity}.",
    "According to reference works, {entity}'s {relation} is {value}.",
    "{entity} ({relation}): {value}. This is well documented.",
    "Sources agree that the {relation} of {entity} is {value}.",
)
_NOISY_DOC = "The {relation} of {entity} is {value}."
_FILLER_DOC = "Record {n}: this source has no entry that matches the query."


def _norm(text: str) -> str:
    return f" {normalize_answer(text)} "


_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """SplitMix64's output function of ``x`` (a counter-based draw)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class CorpusSimulator:
    """A model-free simulator over a table of ``(entity, relation, value)`` facts.

    The asked fact is the one whose entity and relation both appear in the query (longest entity
    first; the question is tried when the query names none). Useful calls write ``k`` documents
    stating that fact; noisy calls write ``k`` documents about other facts (other entities or
    relations, drawn deterministically from ``(seed, query)``), none of which contains the asked
    value or a gold answer; filler records make up any shortfall. The output depends only on the
    request and ``seed``: never on the batch or call order.

    Args:
        facts: ``(entity, relation, value)`` triples.
        k: Documents per call.
        seed: Seed of the noisy-document choice.

    Example:
        >>> sim = CorpusSimulator([("France", "capital", "Paris"), ("Italy", "capital", "Rome"),
        ...                        ("France", "currency", "euro")], k=2)
        >>> print(sim([SimRequest("capital of France", "?", "Paris", noisy=False)])[0])
        Doc 1: The capital of France is Paris.
        Doc 2: Paris is the capital of France.
        >>> "Paris" in sim([SimRequest("capital of France", "?", "Paris", noisy=True)])[0]
        False
    """

    def __init__(self, facts: Sequence[tuple[str, str, str]], k: int = 5, seed: int = 0) -> None:
        self.k = _check_k(k)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ArgumentTypeError(f"`seed`: expected an int, got {type(seed).__name__}")
        self.seed = seed
        checked = []
        for i, fact in enumerate(facts):
            if (
                not isinstance(fact, (tuple, list))
                or len(fact) != 3
                or not all(isinstance(x, str) and x.strip() for x in fact)
            ):
                raise ArgumentError(
                    f"`facts[{i}]`: expected an (entity, relation, value) triple of non-empty "
                    f"str, got {fact!r}"
                )
            checked.append((fact[0].strip(), fact[1].strip(), fact[2].strip()))
        if not checked:
            raise ArgumentError("`facts`: expected at least one fact, got none")
        self.facts = tuple(checked)
        self._norm = [(_norm(e), _norm(r)) for e, r, _ in self.facts]
        # Facts by the first word of their entity: a lookup only tests facts the text names.
        self._by_word: dict[str, list[int]] = {}
        for i, (e, _) in enumerate(self._norm):
            words = e.split()
            if words:
                self._by_word.setdefault(words[0], []).append(i)
        self._noisy_docs = [
            _NOISY_DOC.format(entity=e, relation=r, value=v) for e, r, v in self.facts
        ]
        self._noisy_norm = [_norm(d) for d in self._noisy_docs]

    def lookup(self, text: str) -> tuple[str, str, str] | None:
        """The fact ``text`` asks about: entity and relation both mentioned (longest first)."""
        t = _norm(text)
        candidates = sorted({i for w in set(t.split()) for i in self._by_word.get(w, ())})
        best: tuple[int, int] | None = None
        for i in candidates:
            e, r = self._norm[i]
            if r.strip() and e in t and r in t and (best is None or len(e) + len(r) > best[0]):
                best = (len(e) + len(r), i)
        return None if best is None else self.facts[best[1]]

    def _noisy_choice(self, query: str, skip: Callable[[int], bool]) -> list[str]:
        """Up to ``k`` distinct noisy documents in an order drawn from ``(seed, query)``."""
        n = len(self.facts)
        base = hash_key(f"{self.seed}\x1f{query}") & _MASK64
        chosen: list[int] = []
        seen: set[int] = set()

        def take(i: int) -> None:
            if i not in seen:
                seen.add(i)
                if not skip(i):
                    chosen.append(i)

        # Counter-based draws (SplitMix64 of base + c), then a sweep so that none is missed.
        for c in range(8 * self.k + 16):
            if len(chosen) == self.k:
                break
            take(_splitmix64(base + c) % n)
        start = base % n
        for j in range(n):
            if len(chosen) == self.k:
                break
            take((start + j) % n)
        return [self._noisy_docs[i] for i in chosen]

    def documents(self, request: SimRequest) -> list[str]:
        """The ``k`` documents of one request."""
        fact = self.lookup(request.query) or self.lookup(request.question)
        if not request.noisy:
            if fact is None:
                return [
                    f"Record {n + 1}: no source states what {request.query!r} asks."
                    for n in range(self.k)
                ]
            entity, relation, value = fact
            return [
                _USEFUL_DOCS[n % len(_USEFUL_DOCS)].format(
                    entity=entity, relation=relation, value=value
                )
                for n in range(self.k)
            ]
        banned = [_norm(a) for a in (request.answer, *request.golds) if normalize_answer(a)]
        if fact is not None:
            banned.append(_norm(fact[2]))

        def skip(i: int) -> bool:
            entity, relation, _ = self.facts[i]
            if fact is not None and (entity, relation) == (fact[0], fact[1]):
                return True
            return any(b in self._noisy_norm[i] for b in banned)

        docs = self._noisy_choice(request.query, skip)
        docs += [_FILLER_DOC.format(n=n + 1) for n in range(self.k - len(docs))]
        return docs

    def __call__(self, requests: list[SimRequest]) -> list[str]:
        return [format_documents(self.documents(r)) for r in requests]


def observation_mask(
    input_ids: torch.Tensor,
    info_open: int,
    info_close: int,
    attention_mask: torch.Tensor | None = None,
    *,
    before: Sequence[int] = (),
    after: Sequence[int] = (),
    path: TensorPath | None = None,
) -> torch.Tensor:
    """The observation loss mask of a batch of token ids (Rust; CPU or device path).

    Scanning each row left to right over valid tokens (padding, where ``attention_mask`` is 0,
    is skipped and gets 0): every token from an ``info_open`` through the next ``info_close``
    (inclusive) gets 0, and so do the ``before`` ids right before such an ``info_open`` and the
    ``after`` ids right after its ``info_close``; every other valid token gets 1. A second
    ``info_open`` inside an observation changes nothing, an unclosed one runs to the end, and a
    stray ``info_close`` is a policy token. On the ids of a :meth:`SearchEnv.rollout` (with the
    env's :attr:`SearchEnv.obs_before_ids` / :attr:`SearchEnv.obs_after_ids`) it equals the mask
    from the spans the rollout recorded.

    Args:
        input_ids: Integer tensor ``[N, L]`` (any device).
        info_open: Id of ``<information>``.
        info_close: Id of ``</information>``.
        attention_mask: ``[N, L]``, nonzero on valid tokens; the result takes its dtype.
        before: Ids the environment writes before ``<information>`` (part of the observation).
        after: Ids the environment writes after ``</information>``.
        path: ``"cpu"`` or ``"device"`` to pick the implementation.

    Returns:
        ``[N, L]`` tensor on the ids' device, dtype of ``attention_mask`` (int64 without one).

    Raises:
        ShapeError: ids not 2-D, or an attention mask of another shape.
        DtypeError: ids not integer.
        ArgumentError: equal tag ids, or tags inside ``before`` / ``after``.

    Example:
        >>> ids = torch.tensor([[5, 9, 1, 7, 7, 2, 9, 6]])  # 1 = <information>, 2 = </information>
        >>> observation_mask(ids, 1, 2, before=[9], after=[9])
        tensor([[1, 0, 0, 0, 0, 0, 0, 1]])
    """
    return _core.observation_mask(
        input_ids, info_open, info_close, attention_mask, list(before), list(after), path
    )


def spans_mask(
    lengths: Sequence[int], width: int, spans: Sequence[tuple[int, int, int]]
) -> torch.Tensor:
    """A loss mask from recorded spans (Rust): int64 ``[N, width]``.

    1 on positions below ``lengths[i]`` that no span ``(row, start, end)`` (half-open) of row
    ``i`` covers, 0 elsewhere.

    Raises:
        ArgumentError: A length outside ``[0, width]`` or a span outside its row.

    Example:
        >>> spans_mask([4, 2], 5, [(0, 1, 3)])
        tensor([[1, 0, 0, 1, 0],
                [1, 1, 0, 0, 0]])
    """
    return _core.spans_mask(list(lengths), width, [(r, s, e) for r, s, e in spans])


class _Tokenizer:
    """One interface over a ``tokenizers.Tokenizer`` and a ``transformers`` tokenizer."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok
        if hasattr(tok, "encode_batch") and hasattr(tok, "token_to_id"):
            self.raw = True
        elif hasattr(tok, "convert_tokens_to_ids") and callable(tok):
            self.raw = False
        else:
            raise ArgumentTypeError(
                "`tokenizer`: expected a tokenizers.Tokenizer or a transformers tokenizer, "
                f"got {type(tok).__name__}"
            )

    def encode(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        if self.raw:
            return [list(e.ids) for e in self.tok.encode_batch(texts, add_special_tokens=False)]
        return [list(ids) for ids in self.tok(texts, add_special_tokens=False)["input_ids"]]

    def decode(self, ids: list[int]) -> str:
        return str(self.tok.decode(ids, skip_special_tokens=False))

    def single_id(self, tag: str) -> int:
        ids = self.encode([tag])[0]
        if self.raw:
            vocab_id = self.tok.token_to_id(tag)
        else:
            vocab_id = self.tok.convert_tokens_to_ids(tag)
            if vocab_id == self.tok.unk_token_id:
                vocab_id = None
        # One token, and the tag's own (not an unknown-token id that any text may produce).
        if vocab_id is None or ids != [vocab_id]:
            raise ArgumentError(
                f"`tokenizer`: expected {tag!r} to be one token (add the tags, e.g. "
                f"tokenizer.add_special_tokens(r1kit.search.TAGS)), got ids {ids}"
            )
        return ids[0]

    @property
    def pad_id(self) -> int:
        if self.raw:
            padding = self.tok.padding
            return int(padding["pad_id"]) if padding else 0
        pad = self.tok.pad_token_id
        return int(pad) if pad is not None else 0


def _first_action(text: str) -> tuple[Action, str | None]:
    """The action of one turn's text: the first ``<search>`` or ``<answer>`` decides."""
    s, a = text.find("<search>"), text.find("<answer>")
    if s < 0 and a < 0:
        return "invalid", None
    tag: Action = "search" if a < 0 or (0 <= s < a) else "answer"
    start = (s if tag == "search" else a) + len(tag) + 2
    end = text.find(f"</{tag}>", start)
    if end < 0:
        return "invalid", None
    content = text[start:end].strip()
    if tag == "search" and not content:
        return "invalid", None
    return tag, content


def _cut(text: str) -> str:
    """A turn's text up to its first stop string (kept) or observation tag (dropped)."""
    best = len(text)
    for stop in STOP:
        p = text.find(stop)
        if p >= 0:
            best = min(best, p + len(stop))
    for tag in (INFO_OPEN, INFO_CLOSE):
        p = text.find(tag)
        if p >= 0:
            best = min(best, p)
    return text[:best]


def _clean_docs(docs: str) -> str:
    """Simulator text without observation tags, so the mask from ids sees one block."""
    return docs.replace(INFO_OPEN, "").replace(INFO_CLOSE, "").strip()


def _pad(
    rows: list[list[int]], width: int, pad: int, left: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ids as an int64 ``[N, width]`` tensor padded on one side, and its 0/1 mask."""
    n = len(rows)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
    flat = torch.from_numpy(
        np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
    )
    cols = torch.arange(width, dtype=torch.int64).expand(n, width)
    valid = (cols >= (width - lengths)[:, None]) if left else (cols < lengths[:, None])
    out = torch.full((n, width), pad, dtype=torch.int64)
    out[valid] = flat  # boolean indexing walks rows in order, each row left to right
    return out, valid.to(torch.int64)


@dataclass
class SearchRollout:
    """What :meth:`SearchEnv.rollout` produced for a batch of N rows.

    Token layout follows verl: ``input_ids = cat(prompt_ids, response_ids)``, prompts left-padded
    to ``prompt_length``, responses right-padded. The response holds the policy's text and the
    observations; ``loss_mask`` is 1 on the policy's response tokens only.
    """

    prompt_ids: torch.Tensor
    """int64 ``[N, P]``, left-padded."""
    response_ids: torch.Tensor
    """int64 ``[N, R]``, right-padded."""
    input_ids: torch.Tensor
    """int64 ``[N, P + R]``."""
    attention_mask: torch.Tensor
    """int64 ``[N, P + R]``: 1 on every real token (prompt, policy and observations)."""
    response_mask: torch.Tensor
    """int64 ``[N, R]``: 1 on every real response token."""
    loss_mask: torch.Tensor
    """int64 ``[N, R]``: 1 on policy tokens, 0 on observations and padding."""
    obs_spans: list[list[tuple[int, int]]]
    """Per row, the ``[start, end)`` response-token spans of each observation."""
    responses: list[str]
    """Per row, the response text (policy text and observations)."""
    policy_texts: list[list[str]]
    """Per row, the policy's text of each turn (after cutting at the stop string)."""
    actions: list[list[Action]]
    """Per row, the action of each turn (the final turn included)."""
    queries: list[list[str | None]]
    """Per row and turn, the search query (None when the turn did not search)."""
    noisy: list[list[bool | None]]
    """Per row and turn, whether the simulator call was noisy (None: no call)."""
    requests: list[SimRequest]
    """Every simulator request, in call order."""
    answers: list[str | None]
    """Per row, the last ``<answer>`` of the policy's text (None: no answer)."""
    rewards: torch.Tensor
    """float32 ``[N]``: F1 of the answer against the golds."""
    token_level_rewards: torch.Tensor
    """float32 ``[N, R]``: the reward on the last response token, 0 elsewhere."""
    simulator_calls: int = 0
    """Number of simulator calls made (at most one per turn)."""


class SearchEnv:
    """ZeroSearch's environment: a simulator behind the search tag, noise on a curriculum.

    Args:
        simulator: A :class:`Simulator` (``CorpusSimulator``, ``LLMSimulator`` or your own).
        schedule: Noise curriculum: the noise probability at each training step.
        tokenizer: The policy's tokenizer (``tokenizers.Tokenizer`` or ``transformers``), in
            which ``<information>`` and ``</information>`` are single tokens.
        max_turns: Turns that may search (>= 1); one final turn without search follows.
        max_obs_tokens: Most tokens of one observation, tags and surrounding newlines included;
            longer documents are cut at a token boundary and the closing tag kept.
        topk: Documents kept per search (the first ones); default: the simulator's ``k``
            (5 for a simulator without one); at most the simulator's ``k``.
        seed: Seed of the noise draws.

    Raises:
        ArgumentError: ``max_turns < 1``, ``max_obs_tokens`` too small for the tags, a ``topk``
            the simulator does not write, or a tokenizer without the information tags.
        ArgumentTypeError: A simulator that is not callable, or an unknown tokenizer type.
    """

    def __init__(
        self,
        simulator: Simulator,
        schedule: NoiseSchedule,
        tokenizer: Any,
        max_turns: int = 2,
        max_obs_tokens: int = 512,
        topk: int | None = None,
        seed: int = 0,
    ) -> None:
        if not callable(simulator):
            raise ArgumentTypeError(
                f"`simulator`: expected a callable list[SimRequest] -> list[str], "
                f"got {type(simulator).__name__}"
            )
        if not isinstance(schedule, NoiseSchedule):
            raise ArgumentTypeError(
                f"`schedule`: expected an r1kit.NoiseSchedule, got {type(schedule).__name__}"
            )
        for name, value in (("max_turns", max_turns), ("max_obs_tokens", max_obs_tokens)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ArgumentTypeError(f"`{name}`: expected an int, got {type(value).__name__}")
        if max_turns < 1:
            raise ArgumentError(f"`max_turns`: expected at least 1 turn, got {max_turns}")
        sim_k = getattr(simulator, "k", None)
        sim_k = sim_k if isinstance(sim_k, int) and not isinstance(sim_k, bool) else None
        self.topk = _check_k(topk if topk is not None else sim_k or 5)
        if sim_k is not None and sim_k < self.topk:
            raise ArgumentError(
                f"`topk`: expected at most the simulator's k = {sim_k} documents per call, "
                f"got {topk}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ArgumentTypeError(f"`seed`: expected an int, got {type(seed).__name__}")
        self.simulator = simulator
        self.schedule = schedule
        self.max_turns = max_turns
        self.seed = seed
        self.tokenizer = tokenizer
        self._tok = _Tokenizer(tokenizer)
        self.info_open_id = self._tok.single_id(INFO_OPEN)
        self.info_close_id = self._tok.single_id(INFO_CLOSE)
        self.obs_before_ids, self.obs_after_ids = self._tok.encode([OBS_BEFORE, OBS_AFTER])
        overhead = len(self.obs_before_ids) + len(self.obs_after_ids) + 2
        if max_obs_tokens <= overhead:
            raise ArgumentError(
                f"`max_obs_tokens`: expected more than the {overhead} tokens of the tags and "
                f"newlines, got {max_obs_tokens}"
            )
        self.max_obs_tokens = max_obs_tokens
        self._invalid_ids = self._tok.encode([INVALID_ACTION_MESSAGE])[0]

    def _observation(self, docs_ids: list[int], docs: str) -> tuple[str, list[int]]:
        """The observation block around documents, cut to ``max_obs_tokens``."""
        budget = self.max_obs_tokens - (len(self.obs_before_ids) + len(self.obs_after_ids) + 2)
        if len(docs_ids) > budget:
            docs_ids = docs_ids[:budget]
            docs = self._tok.decode(docs_ids)
        text = f"{OBS_BEFORE}{INFO_OPEN}{docs}{INFO_CLOSE}{OBS_AFTER}"
        ids = [
            *self.obs_before_ids,
            self.info_open_id,
            *docs_ids,
            self.info_close_id,
            *self.obs_after_ids,
        ]
        return text, ids

    def observation_mask(
        self, response_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """:func:`observation_mask` with this env's tag and newline ids (equals ``loss_mask``)."""
        return observation_mask(
            response_ids,
            self.info_open_id,
            self.info_close_id,
            attention_mask,
            before=self.obs_before_ids,
            after=self.obs_after_ids,
        )

    def _simulate(self, requests: list[SimRequest], turn: int) -> list[str]:
        """Calls the simulator once; any failure raises, naming rows and turn."""
        rows = [r.row for r in requests]
        try:
            docs = self.simulator(requests)
        except SimulatorError:
            raise
        except Exception as e:
            raise SimulatorError(
                f"simulator raised on turn {turn} for rows {rows}"
                f"{f' (row {rows[0]})' if len(rows) == 1 else ''}: {e!r}",
                rows[0] if len(rows) == 1 else None,
                turn,
            ) from e
        if not isinstance(docs, (list, tuple)) or len(docs) != len(requests):
            got = len(docs) if isinstance(docs, (list, tuple)) else type(docs).__name__
            raise SimulatorError(
                f"simulator on turn {turn}: expected {len(requests)} documents texts "
                f"(rows {rows}), got {got}",
                None,
                turn,
            )
        for req, d in zip(requests, docs, strict=True):
            if not isinstance(d, str):
                raise SimulatorError(
                    f"simulator on turn {turn}: expected a str for {req.where()}, "
                    f"got {type(d).__name__}",
                    req.row,
                    turn,
                )
        out = []
        for req, d in zip(requests, docs, strict=True):
            # Numbered documents are cut to topk; free text (another retriever's format) is kept.
            parsed = parse_documents(d)
            if parsed and len(parsed) < self.topk:
                raise SimulatorError(
                    f"simulator on turn {turn}: expected {self.topk} documents for "
                    f"{req.where()}, found {len(parsed)}",
                    req.row,
                    turn,
                )
            out.append(format_documents(parsed[: self.topk]) if parsed else d)
        return out

    def rollout(
        self,
        generate_fn: GenerateFn,
        prompts: Sequence[str],
        questions: Sequence[str],
        golds: Golds,
        step: int,
        *,
        keys: Sequence[int] | Sequence[str] | None = None,
    ) -> SearchRollout:
        """Runs the multi-turn search loop on a batch and scores it.

        Turn ``t`` (``0 <= t < max_turns``) calls ``generate_fn(contexts, list(STOP))`` for the
        rows still going (context: prompt + response so far), cuts each text after its first
        stop string (and before any observation tag the policy wrote), and decides by the first
        ``<search>`` / ``<answer>``: an answer ends the row; a search is sent to the simulator
        (one batched call per turn, each request with its own row's question and golds, noisy
        with probability ``schedule.probability(step)``, drawn from ``(seed, step, key, turn)``);
        anything else gets the invalid-action observation. Rows still going after ``max_turns``
        get one final generation, whose searches are not executed (no simulator call).

        Args:
            generate_fn: The policy: ``(contexts, stop_strings) -> continuations``.
            prompts: N prompts (already chat-formatted); tokenized without special tokens.
            questions: N questions (sent to the simulator).
            golds: N gold answers (a str or a list of str each): the F1 reward's reference.
            step: Training step of the noise schedule (>= 0).
            keys: One noise key per row (int or str, e.g. sample uids); default: the row index.

        Returns:
            A :class:`SearchRollout`.

        Raises:
            ShapeError: ``questions``, ``golds`` or ``keys`` not of the length of ``prompts``.
            ArgumentTypeError: A prompt or question that is not a str.
            ArgumentError: ``generate_fn`` returned the wrong number of texts, or a bad ``step``.
            SimulatorError: The simulator raised or returned unusable output (row and turn
                named); no partial rollout is returned.
        """
        n = len(prompts)
        for name, seq in (("questions", questions), ("golds", golds)):
            if len(seq) != n:
                raise ShapeError(f"`{name}`: expected one entry per prompt ({n}), got {len(seq)}")
        for name, seq in (("prompts", prompts), ("questions", questions)):
            for i, s in enumerate(seq):
                if not isinstance(s, str):
                    raise ArgumentTypeError(
                        f"`{name}[{i}]`: expected a str, got {type(s).__name__}"
                    )
        gold_lists: list[tuple[str, ...]] = []
        for i, g in enumerate(golds):
            if isinstance(g, str):
                gold_lists.append((g,))
            elif isinstance(g, Sequence) and g and all(isinstance(x, str) for x in g):
                gold_lists.append(tuple(g))
            else:
                raise ArgumentTypeError(
                    f"`golds[{i}]`: expected a str or a non-empty list of str, got {g!r}"
                )
        if keys is None:
            row_keys: list[Any] = list(range(n))
        else:
            row_keys = list(keys)
            if len(row_keys) != n:
                raise ShapeError(f"`keys`: expected one key per prompt ({n}), got {len(row_keys)}")
        # Validates step and keys before any generation (a bad key would otherwise surface
        # only after the policy's first turn).
        self.schedule.probability(step)
        if n:
            self.schedule.draw_noisy(step, row_keys, 0, self.seed)

        tok = self._tok
        responses = [""] * n
        ids: list[list[int]] = [[] for _ in range(n)]
        spans: list[list[tuple[int, int]]] = [[] for _ in range(n)]
        policy_texts: list[list[str]] = [[] for _ in range(n)]
        actions: list[list[Action]] = [[] for _ in range(n)]
        queries: list[list[str | None]] = [[] for _ in range(n)]
        noisy: list[list[bool | None]] = [[] for _ in range(n)]
        requests: list[SimRequest] = []
        calls = 0
        active = list(range(n))
        for turn in range(self.max_turns + 1):
            if not active:
                break
            final = turn == self.max_turns
            contexts = [prompts[i] + responses[i] for i in active]
            outs = generate_fn(contexts, list(STOP))
            if not isinstance(outs, (list, tuple)) or len(outs) != len(active):
                got = len(outs) if isinstance(outs, (list, tuple)) else type(outs).__name__
                raise ArgumentError(
                    f"`generate_fn`: expected {len(active)} texts on turn {turn} (one per "
                    f"context), got {got}"
                )
            texts = []
            for i, out in zip(active, outs, strict=True):
                if not isinstance(out, str):
                    raise ArgumentTypeError(
                        f"`generate_fn`: expected a str for row {i} on turn {turn}, "
                        f"got {type(out).__name__}"
                    )
                texts.append(_cut(out))
            for i, text, text_ids in zip(active, texts, tok.encode(texts), strict=True):
                responses[i] += text
                ids[i].extend(text_ids)
                policy_texts[i].append(text)
            searching: list[int] = []
            still: list[int] = []
            for i, text in zip(active, texts, strict=True):
                action, content = _first_action(text)
                actions[i].append(action)
                queries[i].append(content if action == "search" else None)
                noisy[i].append(None)
                if final or action == "answer":
                    continue
                still.append(i)
                if action == "search":
                    searching.append(i)
            obs_docs: dict[int, str] = {}
            if searching:
                draws = self.schedule.draw_noisy(
                    step, [row_keys[i] for i in searching], turn, self.seed
                ).tolist()
                batch = []
                for i, is_noisy in zip(searching, draws, strict=True):
                    query = queries[i][-1]
                    assert query is not None
                    noisy[i][-1] = bool(is_noisy)
                    batch.append(
                        SimRequest(
                            query,
                            questions[i],
                            gold_lists[i][0],
                            bool(is_noisy),
                            row=i,
                            turn=turn,
                            golds=gold_lists[i],
                        )
                    )
                calls += 1
                docs = self._simulate(batch, turn)
                requests.extend(batch)
                for i, d in zip(searching, docs, strict=True):
                    obs_docs[i] = _clean_docs(d)
            order = [i for i in still if i in obs_docs]
            docs_ids = tok.encode([obs_docs[i] for i in order])
            by_row = dict(zip(order, docs_ids, strict=True))
            for i in still:
                if i in obs_docs:
                    text, obs_ids = self._observation(by_row[i], obs_docs[i])
                else:
                    text, obs_ids = self._observation(self._invalid_ids, INVALID_ACTION_MESSAGE)
                start = len(ids[i])
                ids[i].extend(obs_ids)
                spans[i].append((start, len(ids[i])))
                responses[i] += text
            active = still

        return self._assemble(
            prompts,
            gold_lists,
            responses,
            ids,
            spans,
            policy_texts,
            actions,
            queries,
            noisy,
            requests,
            calls,
        )

    def _assemble(
        self,
        prompts: Sequence[str],
        golds: list[tuple[str, ...]],
        responses: list[str],
        ids: list[list[int]],
        spans: list[list[tuple[int, int]]],
        policy_texts: list[list[str]],
        actions: list[list[Action]],
        queries: list[list[str | None]],
        noisy: list[list[bool | None]],
        requests: list[SimRequest],
        calls: int,
    ) -> SearchRollout:
        n = len(prompts)
        pad = self._tok.pad_id
        prompt_ids = self._tok.encode(list(prompts))
        p_len = max((len(p) for p in prompt_ids), default=0)
        r_len = max((len(r) for r in ids), default=0)
        prompt_t, prompt_m = _pad(prompt_ids, p_len, pad, left=True)
        response_t, response_m = _pad(ids, r_len, pad, left=False)
        lengths = [len(r) for r in ids]
        loss_mask = spans_mask(lengths, r_len, [(i, s, e) for i in range(n) for s, e in spans[i]])
        policy_only = ["".join(t) for t in policy_texts]
        scores = qa_scores(policy_only, [list(g) for g in golds], metric="f1")
        answers = extract_answer(policy_only)
        token_level = torch.zeros((n, r_len), dtype=torch.float32)
        for i, length in enumerate(lengths):
            if length:
                token_level[i, length - 1] = scores[i]
        return SearchRollout(
            prompt_ids=prompt_t,
            response_ids=response_t,
            input_ids=torch.cat([prompt_t, response_t], dim=1),
            attention_mask=torch.cat([prompt_m, response_m], dim=1),
            response_mask=response_m,
            loss_mask=loss_mask,
            obs_spans=spans,
            responses=responses,
            policy_texts=policy_texts,
            actions=actions,
            queries=queries,
            noisy=noisy,
            requests=requests,
            answers=answers,
            rewards=scores,
            token_level_rewards=token_level,
            simulator_calls=calls,
        )
