"""Shared pieces of the trainers: batching, structured forward passes, sampling, metrics.

Every forward pass goes through :func:`r1kit.parse_parallel`: the structured variant gives the
paths of a ``<Parallel>`` block their own attention and positions, the causal ("Seen") variant
gives plain causal attention with sequential positions, and both use the same code path. The
mask is passed as a ``[B, 1, L, L]`` tensor together with the position ids (bool for sdpa,
additive for eager attention), never ``attention_mask=None``.

Example:
    >>> import torch
    >>> from r1kit.train.model import build_tokenizer, tiny_model
    >>> tok = build_tokenizer(); model = tiny_model(len(tok), hidden_size=32, num_layers=1)
    >>> batch = encode_sft(tok, [("1+1=?\\n", "Final Answer: 2")])
    >>> batch.input_ids.shape, int(batch.loss_mask.sum())  # 3 response tokens + <eos>
    (torch.Size([1, 10]), 4)
"""

from __future__ import annotations

import copy
import importlib
import json
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from r1kit.errors import ArgumentError
from r1kit.structure import ParallelLayout, ParallelTags, parse_parallel

__all__ = [
    "MetricsLog",
    "Rollout",
    "SFTBatch",
    "encode_sft",
    "epoch_batches",
    "frozen_copy",
    "layout_inputs",
    "progress_bar",
    "sample",
    "sequence_log_probs",
]


@dataclass
class SFTBatch:
    """Right-padded prompt+response ids with the response (and ``<eos>``) marked for the loss."""

    input_ids: torch.Tensor
    """int64 ``[B, L]``."""
    attention_mask: torch.Tensor
    """int64 ``[B, L]``, 0 on pads."""
    loss_mask: torch.Tensor
    """float ``[B, L]``, 1 where token ``t`` is a response token (predicted from ``t - 1``)."""
    response_start: torch.Tensor
    """int64 ``[B]``: index of each row's first response token."""


def encode_sft(
    tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int | None = None
) -> SFTBatch:
    """Tokenizes ``(prompt, response)`` pairs; ``<eos>`` ends every response.

    Args:
        tokenizer: A ``transformers`` tokenizer with ``pad_token_id`` and ``eos_token_id``.
        pairs: Prompts and target responses.
        max_length: Truncate each row to this many tokens (None: no limit).

    Returns:
        The batch.

    Raises:
        ArgumentError: If ``pairs`` is empty or a prompt fills the whole ``max_length``.
    """
    if not pairs:
        raise ArgumentError("`pairs`: expected at least one (prompt, response) pair, got none")
    rows, starts = [], []
    for i, (prompt, response) in enumerate(pairs):
        p = tokenizer.encode(prompt, add_special_tokens=False)
        r = [*tokenizer.encode(response, add_special_tokens=False), tokenizer.eos_token_id]
        ids = p + r
        if max_length is not None:
            if len(p) >= max_length:
                raise ArgumentError(
                    f"`pairs[{i}]`: the prompt has {len(p)} tokens, no room under "
                    f"max_length={max_length}"
                )
            ids = ids[:max_length]
        rows.append(ids)
        starts.append(len(p))
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), int(tokenizer.pad_token_id), dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    loss_mask = torch.zeros(len(rows), width)
    for i, (ids, start) in enumerate(zip(rows, starts, strict=True)):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention_mask[i, : len(ids)] = 1
        loss_mask[i, start : len(ids)] = 1.0
    return SFTBatch(input_ids, attention_mask, loss_mask, torch.tensor(starts, dtype=torch.long))


def layout_inputs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_start: int | torch.Tensor,
    tags: ParallelTags,
    structured: bool = True,
) -> tuple[dict[str, torch.Tensor], ParallelLayout]:
    """The keyword arguments of a structured (or causal) forward pass, and the parse behind them.

    Args:
        model: A ``transformers`` causal LM (its attention implementation picks the mask kind).
        input_ids: ``[B, L]``.
        attention_mask: ``[B, L]``, 0 on pads (left or right).
        response_start: First response token per row; tags in the prompt are ordinary tokens.
        tags: The tag ids.
        structured: False for the causal ("Seen") variant.

    Returns:
        ``({"input_ids", "attention_mask", "position_ids"}, layout)``.
    """
    layout = parse_parallel(
        input_ids,
        tags,
        attention_mask=attention_mask,
        response_start=response_start,
        structured=structured,
    )
    impl = getattr(getattr(model, "config", None), "_attn_implementation", "sdpa")
    if impl == "eager":
        dtype = next(model.parameters()).dtype
        mask = layout.attention_mask("additive", dtype)
    else:
        mask = layout.attention_mask("bool")
    inputs = {"input_ids": input_ids, "attention_mask": mask, "position_ids": layout.position_ids}
    return inputs, layout


def sequence_log_probs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_start: int | torch.Tensor,
    tags: ParallelTags,
    structured: bool = True,
) -> torch.Tensor:
    """``out[b, t] = log p(ids[b, t] | ids[b, :t])`` under the layout; ``out[:, 0] = 0``.

    Args:
        model, input_ids, attention_mask, response_start, tags, structured: As in
            :func:`layout_inputs`.

    Returns:
        float ``[B, L]`` (differentiable when grad is enabled).
    """
    inputs, _ = layout_inputs(model, input_ids, attention_mask, response_start, tags, structured)
    logits = model(**inputs).logits[:, :-1].float()
    picked = torch.gather(logits, 2, input_ids[:, 1:, None]).squeeze(2)
    lp = picked - torch.logsumexp(logits, dim=-1)
    return torch.cat([torch.zeros_like(lp[:, :1]), lp], dim=1)


@dataclass
class Rollout:
    """Sampled responses: left-padded prompts (width ``prompt_len``) followed by the responses."""

    input_ids: torch.Tensor
    """int64 ``[N, P + T]``."""
    attention_mask: torch.Tensor
    """int64 ``[N, P + T]``: 0 on prompt pads and after each response's ``<eos>``."""
    prompt_len: int
    """``P``: every response starts at this index."""
    texts: list[str]
    """The decoded responses (tags kept, ``<eos>`` and pads dropped)."""
    forced: torch.Tensor
    """bool ``[N, T]``: tokens the sampler or the environment wrote instead of the model (the
    path-count rule; search observations), left out of :attr:`loss_mask`."""
    log_probs: torch.Tensor | None = None
    """float ``[N, T]`` or None: ``log p(token | what the model saw when it was sampled)`` at
    temperature 1 (forced tokens included; 0 on pads). :func:`sample` fills it; for rows without
    a structural error it equals :func:`sequence_log_probs` of the rollout (the tests' check
    that the sampler used the training view)."""

    @property
    def response_mask(self) -> torch.Tensor:
        """float ``[N, T]``: 1 on response tokens (the ``<eos>`` included)."""
        return self.attention_mask[:, self.prompt_len :].float()

    @property
    def loss_mask(self) -> torch.Tensor:
        """float ``[N, T]``: the response tokens the policy chose (forced ones excluded)."""
        return self.response_mask * (~self.forced).float()


class _PathCounter:
    """Per-row state of the open top-level block (token by token): depth, paths opened/closed."""

    def __init__(self, tags: ParallelTags) -> None:
        self.tags = tags
        self.depth = 0
        self.opened = 0
        self.closed = 0
        self.after_close = False

    def push(self, token: int) -> None:
        t = self.tags
        self.after_close = False
        if token == t.parallel:
            self.depth += 1
            if self.depth == 1:
                self.opened = self.closed = 0
        elif token == t.parallel_end and self.depth > 0:
            self.depth -= 1
        elif token == t.path and self.depth == 1:
            self.opened += 1
        elif token == t.path_end and self.depth == 1:
            self.closed += 1
            self.after_close = True


class _Row:
    """One row of the sampling batch: a response row, or path ``k`` of a forked block."""

    def __init__(self, prompt: list[int], tags: ParallelTags) -> None:
        self.prompt = prompt
        self.resp: list[int] = []
        self.forced: list[bool] = []
        self.lps: list[float] = []
        self.counter = _PathCounter(tags)
        self.done = False
        self.group: _Group | None = None  # set on path rows
        self.k = -1
        self.decision: int | None = None  # the path row's delimiter token, once written

    def fork(self, k: int, head: int, tags: ParallelTags) -> _Row:
        """Path row ``k``: the response up to the block header, then a ``<Path>``."""
        row = _Row(self.prompt, tags)
        row.resp, row.forced, row.lps = (
            self.resp[: head + 1],
            self.forced[: head + 1],
            self.lps[: head + 1],
        )
        row.counter.depth, row.counter.opened, row.counter.closed = 1, 1, k
        row.k = k
        return row


class _Group:
    """The path rows of one forked top-level block."""

    def __init__(self, owner: _Row, head: int, rows: list[_Row]) -> None:
        self.owner, self.head, self.rows = owner, head, rows

    def ended(self, row: _Row) -> bool:
        """Path ``row.k`` is the block's last one (closing delimiter, ``<eos>`` or the cap)."""
        return row.done and row.decision != row.counter.tags.path

    def prune(self) -> None:
        """Stops the rows after the first path known to be the last one: they are never used."""
        for j, row in enumerate(self.rows):
            if self.ended(row):
                for later in self.rows[j + 1 :]:
                    later.done = True
                return

    def resolve(self, budget: int) -> bool:
        """Merges the paths into the owner row once the path count is known; False if not yet."""
        length, count = self.head + 1, 0  # the merged response so far (with the first <Path>)
        for row in self.rows:
            if length >= budget:  # the merged response is already full: later paths are cut
                break
            if not row.done:
                return False
            count += 1
            length += len(row.resp) - self.head - 1
            if self.ended(row):
                break
        first = self.rows[0]
        resp, forced, lps = list(first.resp), list(first.forced), list(first.lps)
        for row in self.rows[1:count]:  # each path without its leading <Path> (the one before)
            resp += row.resp[self.head + 1 :]
            forced += row.forced[self.head + 1 :]
            lps += row.lps[self.head + 1 :]
        stopped = self.rows[count - 1].decision is None  # <eos> or the cap inside the last path
        owner = self.owner
        owner.resp, owner.forced, owner.lps = resp[:budget], forced[:budget], lps[:budget]
        owner.counter = _PathCounter(owner.counter.tags)
        for token in owner.resp:
            owner.counter.push(token)
        owner.counter.after_close = False
        owner.group, owner.k, owner.decision = None, -1, None
        owner.done = stopped or len(owner.resp) >= budget
        return True


@torch.no_grad()
def sample(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    tags: ParallelTags,
    max_new_tokens: int,
    temperature: float = 1.0,
    structured: bool = True,
    generator: torch.Generator | None = None,
    min_paths: int = 2,
    max_paths: int = 4,
) -> Rollout:
    """Samples one response per prompt under the training layout (mask and positions).

    Each new token is drawn from a forward pass over the row so far, with the mask and position
    ids that :func:`r1kit.parse_parallel` gives it, so every token is sampled under exactly the
    view the training step gives it. There is no KV cache (each step re-reads the row), which is
    fine for the demo's model and short responses.

    Paths as a batch (structured variant): when a row writes the first ``<Path>`` of a top-level
    block, it is forked into ``max_paths`` path rows: path row 0 is the row itself, path row k is
    the response up to the block header plus a ``<Path>``. All rows (responses and paths) are
    then generated together, one batched forward pass per token. A path row holds only the
    shared prefix and its own path, so its plain parse is the structured view of that path in
    the merged row: the same positions (every path restarts right after the header) and the same
    visible tokens. Path row k ends at its first top-level delimiter: ``<Path>`` (there is a path
    k+1), ``</Parallel>`` or an in-block ``<Summary>`` (path k is the last one); tokens between
    its ``</Path>`` and that delimiter belong to path k, as in the parse. The realized path count
    K is the first k whose row ends the block (or hits ``<eos>`` or the length cap); rows after
    it are dropped. This has the distribution of sampling the paths one after another: under
    the structured mask path k depends only on the prefix, so the paths are independent given
    the prefix, and drawing all ``max_paths`` candidates and keeping the first K is the same as
    drawing them in turn and stopping at K. The merged row (prefix, path 0 with its delimiter,
    each later path without its leading ``<Path>``, the last one with ``</Parallel>``) is cut to
    ``max_new_tokens`` (a block cut short parses as ``truncated``) and goes on under the full
    layout: the summary sees every path. Blocks nested inside a path are sampled within their
    path row, sequentially, under that row's own parse. A row whose earlier text is already a
    structural error is causal text in the parse and is not forked; a row whose block turns out
    malformed later falls back to causal text in the training parse although it was sampled
    under the structured view of its prefix.

    Path count: under the structured layout the token after a ``</Path>`` is predicted from that
    path alone, so the model cannot see how many paths its block already has (and under greedy
    decoding every path of a block is the same text). The sampler therefore writes ``<Path>``
    right after the ``</Path>`` of path k while k + 1 < ``min_paths``, and ``</Parallel>`` there
    once k + 1 = ``max_paths`` (also in place of a later ``<Path>`` of the last path row); in
    between the model decides. Those tokens are marked in :attr:`Rollout.forced` and left out
    of :attr:`Rollout.loss_mask`. The causal variant (``structured=False``) sees its paths and
    is neither forked nor forced.

    Args:
        model: A ``transformers`` causal LM.
        tokenizer: Its tokenizer (``pad_token_id``, ``eos_token_id``).
        prompts: The prompts (left-padded to a common width).
        tags: The tag ids.
        max_new_tokens: Response length cap.
        temperature: Softmax temperature; 0 picks the most likely token.
        structured: False samples with plain causal attention and positions.
        generator: Random generator of the draws.
        min_paths: Paths a top-level block gets before the model may close it (structured only).
        max_paths: Paths after which the block is closed (structured only).

    Returns:
        The :class:`Rollout`.

    Raises:
        ArgumentError: If ``prompts`` is empty, ``max_new_tokens < 1`` or ``temperature < 0``.
    """
    if not prompts:
        raise ArgumentError("`prompts`: expected at least one prompt, got none")
    if max_new_tokens < 1:
        raise ArgumentError(f"`max_new_tokens`: expected a positive count, got {max_new_tokens}")
    if temperature < 0:
        raise ArgumentError(f"`temperature`: expected a value >= 0, got {temperature}")
    if not 1 <= min_paths <= max_paths:
        raise ArgumentError(
            f"`max_paths`: expected 1 <= min_paths <= max_paths, got {min_paths}, {max_paths}"
        )
    pad, eos = int(tokenizer.pad_token_id), int(tokenizer.eos_token_id)
    encoded = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    outputs = [_Row(list(e), tags) for e in encoded]
    live = list(outputs)  # rows still in the batch: response rows and path rows
    groups: list[_Group] = []
    delimiters = (tags.path, tags.parallel_end, tags.summary)
    was_training = model.training
    model.eval()
    while live:
        width = max(len(r.prompt) + len(r.resp) for r in live)
        ids = torch.full((len(live), width), pad, dtype=torch.long)
        mask = torch.zeros(len(live), width, dtype=torch.long)
        starts = torch.zeros(len(live), dtype=torch.long)
        for i, r in enumerate(live):  # left-padded: every row's last token is the last column
            seq = r.prompt + r.resp
            ids[i, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[i, width - len(seq) :] = 1
            starts[i] = width - len(r.resp)
        inputs, layout = layout_inputs(model, ids, mask, starts, tags, structured)
        logits = model(**inputs).logits[:, -1].float()
        log_probs = torch.log_softmax(logits, dim=-1)
        logits[:, pad] = float("-inf")  # padding is not a choice the policy makes
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        for i, r in enumerate(live):
            token, forced, c = int(nxt[i]), False, r.counter
            if structured and c.after_close:
                if c.closed < min_paths:
                    token, forced = tags.path, True
                elif c.closed >= max_paths:
                    token, forced = tags.parallel_end, True
            if r.group is not None and c.depth == 1 and token == tags.path:
                if r.k + 1 >= max_paths:  # no row for another path: the cap closes the block
                    token, forced = tags.parallel_end, True
            fork = (
                structured
                and r.group is None
                and token == tags.path
                and c.depth == 1
                and c.opened == 0
                and layout.status[i].kind in ("ok", "truncated")
            )
            if r.group is not None and c.depth == 1 and token in delimiters:
                r.decision = token
            c.push(token)
            r.resp.append(token)
            r.forced.append(forced)
            r.lps.append(float(log_probs[i, token]))
            if token == eos or len(r.resp) >= max_new_tokens or r.decision is not None:
                r.done = True
            elif fork:
                head = len(r.resp) - 1
                r.k = 0
                paths = [r] + [r.fork(k, head, tags) for k in range(1, max_paths)]
                group = _Group(r, head, paths)
                for path in paths:
                    path.group = group
                groups.append(group)
        for group in list(groups):
            group.prune()
            if group.resolve(max_new_tokens):
                groups.remove(group)
        live = [r for r in outputs if not r.done and r.group is None]
        live += [r for g in groups for r in g.rows if not r.done]
    model.train(was_training)
    width = max(len(r.prompt) for r in outputs)
    steps = max(len(r.resp) for r in outputs)
    n = len(outputs)
    ids = torch.full((n, width + steps), pad, dtype=torch.long)
    mask = torch.zeros(n, width + steps, dtype=torch.long)
    forced_out = torch.zeros(n, steps, dtype=torch.bool)
    lp_out = torch.zeros(n, steps)
    texts = []
    for i, r in enumerate(outputs):
        ids[i, width - len(r.prompt) : width] = torch.tensor(r.prompt, dtype=torch.long)
        mask[i, width - len(r.prompt) : width + len(r.resp)] = 1
        ids[i, width : width + len(r.resp)] = torch.tensor(r.resp, dtype=torch.long)
        forced_out[i, : len(r.resp)] = torch.tensor(r.forced, dtype=torch.bool)
        lp_out[i, : len(r.resp)] = torch.tensor(r.lps)
        row = r.resp[:-1] if r.resp and r.resp[-1] == eos else r.resp
        texts.append(tokenizer.decode(row, skip_special_tokens=False))
    return Rollout(ids, mask, width, texts, forced_out, lp_out)


def epoch_batches(n: int, k: int, rng: random.Random) -> Iterator[list[int]]:
    """Endless batches of ``k`` indices into ``range(n)``: epochs shuffled by ``rng`` and
    consumed in order, a new epoch appended whenever fewer than ``k`` indices are left.

    Example:
        >>> batches = epoch_batches(3, 2, random.Random(0))
        >>> sorted(next(batches) + next(batches)[:1])
        [0, 1, 2]
    """
    order: list[int] = []
    while True:
        if len(order) < k:
            fresh = list(range(n))
            rng.shuffle(fresh)
            order += fresh
        picked, order = order[:k], order[k:]
        yield picked


def frozen_copy(model: Any) -> Any:
    """A copy of ``model`` in eval mode with no parameter requiring grad (a KL reference)."""
    ref = copy.deepcopy(model).eval()
    for param in ref.parameters():
        param.requires_grad_(False)
    return ref


def progress_bar(steps: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar over ``range(1, steps + 1)`` (tqdm's ``auto`` flavour; silent when disabled)."""
    tqdm = importlib.import_module("tqdm.auto").tqdm
    return tqdm(range(1, steps + 1), desc=desc, disable=not enabled, leave=False)


class MetricsLog:
    """Appends one JSON object per step to ``path`` (``metrics.jsonl``) and keeps them in memory.

    Example:
        >>> import tempfile, os
        >>> log = MetricsLog(os.path.join(tempfile.mkdtemp(), "metrics.jsonl"))
        >>> log.write({"stage": "sft", "step": 1, "loss": 2.5})["loss"]
        2.5
        >>> len(open(log.path).readlines())
        1
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        self._start = time.perf_counter()

    def write(self, row: dict[str, Any]) -> dict[str, Any]:
        """Records a row (``time_s`` since the log was opened is added)."""
        row = {**row, "time_s": round(time.perf_counter() - self._start, 3)}
        # NaN (no block to measure, ...) is written as null: strict JSON readers reject NaN.
        row = {k: None if isinstance(v, float) and v != v else v for k, v in row.items()}
        self.rows.append(row)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        return row


def response_stats(rollout: Rollout, golds: Sequence[str]) -> dict[str, float]:
    """Accuracy, parallel-format ratio, mean block position and length of a rollout.

    ``accuracy`` is :func:`r1kit.rewards.math_scores` (1 correct, 0 otherwise);
    ``parallel_ratio`` the share of responses with at least one valid block and no malformed
    one (:func:`r1kit.rewards.parallel_format`); ``block_position`` the mean start of each
    response's first ``<Parallel>`` as a fraction of its characters (NaN when no response has
    one).
    """
    from r1kit import rewards

    acc = rewards.math_scores(rollout.texts, list(golds))
    fmt = rewards.parallel_format(rollout.texts)
    ok = fmt.valid & fmt.uses_parallel
    starts: list[float] = []
    for text in rollout.texts:
        tag = text.find("<Parallel>")
        if tag >= 0 and text:
            starts.append(tag / len(text))
    return {
        "accuracy": float(acc.mean()),
        "parallel_ratio": float(ok.float().mean()),
        "block_position": sum(starts) / len(starts) if starts else float("nan"),
        "response_tokens": float(rollout.response_mask.sum(1).mean()),
    }


def evaluate(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Any],
    tags: ParallelTags,
    max_new_tokens: int,
    structured: bool = True,
    batch_size: int = 64,
) -> dict[str, float]:
    """Greedy responses to held-out examples, scored by :func:`response_stats`.

    Args:
        model: A ``transformers`` causal LM.
        tokenizer: Its tokenizer.
        examples: Items with ``prompt`` and ``answer``.
        tags: The tag ids.
        max_new_tokens: Response length cap.
        structured: Layout of the sampling (as in training).
        batch_size: Prompts per forward pass.

    Returns:
        ``accuracy``, ``parallel_ratio``, ``block_position``, ``response_tokens`` over all
        examples, and ``n``.
    """
    if not examples:
        raise ArgumentError("`examples`: expected at least one example, got none")
    totals: dict[str, float] = {}
    weights: dict[str, int] = {}
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        rollout = sample(
            model,
            tokenizer,
            [e.prompt for e in chunk],
            tags,
            max_new_tokens,
            temperature=0.0,
            structured=structured,
        )
        for key, value in response_stats(rollout, [e.answer for e in chunk]).items():
            if value == value:  # NaN block positions carry no weight
                totals[key] = totals.get(key, 0.0) + value * len(chunk)
                weights[key] = weights.get(key, 0) + len(chunk)
    out = {k: round(totals[k] / weights[k], 6) for k in totals}
    out.setdefault("block_position", float("nan"))
    out["n"] = float(len(examples))
    return out
