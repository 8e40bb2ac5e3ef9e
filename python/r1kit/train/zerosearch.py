"""The ``zerosearch`` recipe: RL with simulated search, the noise curriculum and an F1 reward.

ZeroSearch (arXiv 2505.04588) teaches a policy to search by putting a simulator behind the
``<search>`` tag. Here the policy's multi-turn rollouts run in :class:`r1kit.search.SearchEnv`:
the policy writes ``<search>query</search>``, the environment appends
``<information>Doc 1: ... Doc k: ...</information>`` from the simulator, and the episode ends at
``<answer>...</answer>``. Each search call is noisy (documents about other facts) with the
probability of :class:`r1kit.NoiseSchedule` at the training step, rising from ``noise_start`` to
``noise_end``. The reward is the F1 of the last answer against the gold
(:func:`r1kit.rewards.qa_scores`), and the observation tokens are out of the loss (the policy
still attends to them).

The demo embeds everything: the generated fact table (:func:`r1kit.train.data.fact_table`) as the
corpus of a :class:`r1kit.search.CorpusSimulator` (no simulation LLM to download), and the tiny
random Qwen2 as the policy. Two stages:

1. ``stage1_sft``: a short SFT **cold start** on templated search traces (question -> search ->
   information -> answer, written by a scripted policy inside the same environment, loss on the
   policy's tokens only). A randomly initialised model cannot discover the search protocol by
   sampling, so this warm start teaches the format; it is deliberately short, and
   the report's "before RL" numbers are measured right after it.
2. ``stage2_rl``: GRPO (or REINFORCE++, ``estimator = "reinforce_plus_plus"``) with ``SearchEnv``
   rollouts of the policy under the noise curriculum.

Held-out questions are about entities that no training question mentions (their facts are in the
search corpus only), answered greedily with a clean search engine (``eval_noise``, default 0) and
again with noisy search (``noise_end``).

Example:
    >>> cfg = ZeroSearchConfig.from_dict({"rl_steps": 5, "estimator": "reinforce_plus_plus"})
    >>> cfg.rl_steps, cfg.noise_schedule().probability(5)
    (5, 0.5)
"""

from __future__ import annotations

import copy
import json
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from r1kit.curriculum import NoiseSchedule, hash_key
from r1kit.errors import ArgumentError
from r1kit.rewards import normalize_answer, qa_scores
from r1kit.search import (
    INFO_CLOSE,
    CorpusSimulator,
    SearchEnv,
    SearchRollout,
    SimRequest,
    format_documents,
)
from r1kit.structure import ParallelTags
from r1kit.train.core import (
    MetricsLog,
    Rollout,
    SFTBatch,
    epoch_batches,
    frozen_copy,
    progress_bar,
)
from r1kit.train.data import Example, fact_table
from r1kit.train.grpo import ESTIMATORS, GRPOConfig, grpo_update
from r1kit.train.model import ANSWER_TAGS
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
from r1kit.train.sft import SFTConfig, sft_train_batches

__all__ = [
    "STAGES",
    "QASimulator",
    "SearchPolicy",
    "ZeroSearchConfig",
    "evaluate_search",
    "fact_triples",
    "generate",
    "run_zerosearch",
    "search_grpo_train",
    "search_traces",
]

STAGES = ("stage1_sft", "stage2_rl")
"""The recipe's stages, in order (also the checkpoint folder names)."""


@dataclass
class ZeroSearchConfig(RecipeConfig):
    """Settings of :func:`run_zerosearch` (defaults: the demo, a few minutes on 2 CPU cores).

    Attributes:
        name: Run name (the output folder under ``runs/``).
        seed: Seed of the data, the model, the noise draws and every stage.
        hidden_size, num_layers, num_heads: The tiny Qwen2's size.
        n_entities: Entities of the demo's fact table (4 questions each; at most 144).
        n_eval_entities: Of those, entities held out of every training set (their questions are
            the held-out set; their facts are only in the search corpus).
        n_eval: Held-out rows of a data file (``data=``).
        topk: Documents per search call.
        max_turns: Turns that may search; one final turn without search follows.
        max_obs_tokens: Most tokens of one observation.
        turn_tokens: Most new tokens of one policy turn.
        sft_steps, sft_batch_size, sft_lr: Stage 1 (the cold start).
        rl_steps: Steps of stage 2 (also the noise schedule's ``total_steps``).
        estimator: ``"grpo"``, ``"reinforce_plus_plus"`` or another key of
            :data:`r1kit.train.grpo.ESTIMATORS`.
        prompts_per_step, group_size, rl_lr, kl_coef, temperature: RL settings.
        noise_start, noise_end, noise_base, noise_kind: The :class:`r1kit.NoiseSchedule`.
        eval_noise: Noise probability of the held-out evaluation (0: a clean search engine).
        threads: ``torch.set_num_threads`` for the run (0: torch's default).
        progress: Show tqdm bars.
        resume: Continue a run: finished stages are loaded, not rerun.
    """

    name: str = "zerosearch"
    seed: int = 0
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    n_entities: int = 140
    n_eval_entities: int = 40
    n_eval: int = 100
    topk: int = 1
    max_turns: int = 2
    max_obs_tokens: int = 48
    turn_tokens: int = 24
    sft_steps: int = 150
    sft_batch_size: int = 32
    sft_lr: float = 2e-3
    rl_steps: int = 200
    estimator: str = "grpo"
    prompts_per_step: int = 8
    group_size: int = 8
    rl_lr: float = 3e-4
    kl_coef: float = 0.0
    temperature: float = 1.0
    noise_start: float = 0.0
    noise_end: float = 0.5
    noise_base: float = 4.0
    noise_kind: str = "exponential"
    eval_noise: float = 0.0
    threads: int = 1
    progress: bool = True
    resume: bool = False

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ArgumentError(
                f"`estimator`: expected one of {sorted(ESTIMATORS)}, got {self.estimator!r}"
            )
        if not 0 < self.n_eval_entities < self.n_entities:
            raise ArgumentError(
                f"`n_eval_entities`: expected 0 < n_eval_entities < n_entities = "
                f"{self.n_entities}, got {self.n_eval_entities}"
            )
        try:
            self.noise_schedule()  # checks the noise settings now, not after stage 1
        except ArgumentError as e:
            raise ArgumentError(f"`config` noise settings (noise_*, rl_steps): {e}") from None

    def noise_schedule(self) -> NoiseSchedule:
        """The training noise curriculum over ``rl_steps`` steps."""
        return NoiseSchedule(
            self.noise_start,
            self.noise_end,
            self.rl_steps,
            self.noise_base,
            self.noise_kind,  # type: ignore[arg-type]
        )


_FACT_QUESTION = re.compile(r"^What is the (\w+) of (\w+)\?$")


def fact_triples(examples: Sequence[Example]) -> list[tuple[str, str, str]]:
    """The ``(entity, relation, value)`` triples behind :func:`fact_table` questions.

    Raises:
        ArgumentError: If a prompt is not a fact-table question.

    Example:
        >>> fact_triples(fact_table(1, seed=0))[:2]
        [('anan', 'color', 'red'), ('anan', 'city', 'tarsk')]
    """
    out = []
    for i, ex in enumerate(examples):
        m = _FACT_QUESTION.match(ex.prompt.strip())
        if m is None:
            raise ArgumentError(
                f"`examples[{i}]`: expected a fact-table question 'What is the <relation> of "
                f"<entity>?', got {ex.prompt!r}"
            )
        out.append((m.group(2), m.group(1), ex.answer))
    return out


def _query(question: str) -> str:
    """The query of a templated trace: ``color of kalo`` for a fact question, else the question."""
    m = _FACT_QUESTION.match(question)
    return f"{m.group(1)} of {m.group(2)}" if m else question


_QA_USEFUL = ("The answer to '{question}' is {answer}.", "{answer} answers '{question}'.")


class QASimulator:
    """A model-free simulator over question-answer rows (for data files without a fact table).

    Useful calls write ``k`` documents that state the row's own answer to its question; noisy
    calls write documents about other rows (drawn deterministically from ``(seed, query)``), none
    of which contains a gold answer of the asking row. It stands in for a simulation LLM in
    ``r1kit train --recipe zerosearch``; pass ``simulator=`` to :func:`run_zerosearch` for a
    real one (e.g. :meth:`r1kit.search.LLMSimulator.from_hf`).

    Args:
        rows: ``(question, answer)`` pairs (the noisy documents' pool).
        k: Documents per call.
        seed: Seed of the noisy choice.

    Example:
        >>> sim = QASimulator([("2+2?", "4"), ("capital of Peru?", "Lima")], k=1)
        >>> sim([SimRequest("2+2", "2+2?", "4", noisy=False)])
        ["Doc 1: The answer to '2+2?' is 4."]
        >>> sim([SimRequest("2+2", "2+2?", "4", noisy=True)])
        ["Doc 1: The answer to 'capital of Peru?' is Lima."]
    """

    def __init__(self, rows: Sequence[tuple[str, str]], k: int = 2, seed: int = 0) -> None:
        if not rows:
            raise ArgumentError("`rows`: expected at least one (question, answer) row, got none")
        if k < 1:
            raise ArgumentError(f"`k`: expected at least 1 document per call, got {k}")
        self.k = k
        self.seed = seed
        self.docs = [_QA_USEFUL[0].format(question=q, answer=a) for q, a in rows]
        self._norm = [f" {normalize_answer(d)} " for d in self.docs]

    def documents(self, request: SimRequest) -> list[str]:
        """The ``k`` documents of one request."""
        if not request.noisy:
            return [
                _QA_USEFUL[n % len(_QA_USEFUL)].format(
                    question=request.question, answer=request.answer
                )
                for n in range(self.k)
            ]
        banned = [
            f" {normalize_answer(a)} "
            for a in (request.answer, *request.golds)
            if normalize_answer(a)
        ]
        start = hash_key(f"{self.seed}\x1f{request.query}") % len(self.docs)
        out: list[str] = []
        for j in range(len(self.docs)):
            i = (start + j) % len(self.docs)
            if not any(b in self._norm[i] for b in banned):
                out.append(self.docs[i])
            if len(out) == self.k:
                break
        out += [f"Record {n + 1}: no entry matches the query." for n in range(self.k - len(out))]
        return out

    def __call__(self, requests: list[SimRequest]) -> list[str]:
        return [format_documents(self.documents(r)) for r in requests]


@torch.no_grad()
def _sample_ids(
    model: Any,
    tokenizer: Any,
    contexts: Sequence[str],
    max_new_tokens: int,
    stop_ids: Sequence[int],
    temperature: float,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sampling loop of :func:`generate`.

    Returns:
        The left-padded context ids ``[N, W]`` and their mask, the new ids ``[N, T]`` (pads
        after a row's stop), and the log-probability of each new id under the model at
        temperature 1 (the distribution the training forward computes) ``[N, T]``.
    """
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    encoded = [tokenizer.encode(c, add_special_tokens=False) for c in contexts]
    n, width = len(encoded), max(len(e) for e in encoded)
    ids = torch.full((n, width), int(pad), dtype=torch.long)
    mask = torch.zeros(n, width, dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, width - len(e) :] = torch.tensor(e, dtype=torch.long)
        mask[i, width - len(e) :] = 1
    context_mask = mask
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    stops = torch.tensor([*stop_ids, *([eos] if eos is not None else [])], dtype=torch.long)
    was_training = model.training
    model.eval()
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    past, logits = out.past_key_values, out.logits[:, -1].float()
    next_pos = positions[:, -1] + 1
    done = torch.zeros(n, dtype=torch.bool)
    new: list[torch.Tensor] = []
    log_probs: list[torch.Tensor] = []
    for t in range(max_new_tokens):
        step_lp = torch.log_softmax(logits, -1)  # the training forward's distribution
        if pad != eos:
            logits = logits.clone()
            logits[:, pad] = float("-inf")  # padding is not a choice the policy makes
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        nxt = torch.where(done, torch.full_like(nxt, int(pad)), nxt)
        new.append(nxt)
        log_probs.append(step_lp.gather(1, nxt[:, None])[:, 0])
        done |= torch.isin(nxt, stops)
        if bool(done.all()) or t == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones(n, 1, dtype=torch.long)], dim=1)
        out = model(
            input_ids=nxt[:, None],
            attention_mask=mask,
            position_ids=next_pos[:, None],
            past_key_values=past,
            use_cache=True,
        )
        past, logits = out.past_key_values, out.logits[:, -1].float()
        next_pos = next_pos + 1
    model.train(was_training)
    return ids, context_mask, torch.stack(new, 1), torch.stack(log_probs, 1)


def generate(
    model: Any,
    tokenizer: Any,
    contexts: Sequence[str],
    max_new_tokens: int,
    stop_ids: Sequence[int],
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[str]:
    """Continues each context with plain causal sampling and a KV cache, batched.

    Contexts are left-padded (position ids count real tokens only, as in the training forward
    of the causal layout); a row stops after a token in ``stop_ids`` (kept in its text) or
    ``<eos>`` (dropped), or after ``max_new_tokens``.

    Args:
        model: A ``transformers`` causal LM.
        tokenizer: Its tokenizer.
        contexts: Texts to continue (tokenized without special tokens).
        max_new_tokens: Most new tokens per row.
        stop_ids: Token ids that end a row (e.g. ``</search>``, ``</answer>``).
        temperature: Softmax temperature; 0 picks the most likely token.
        generator: Random generator of the draws.

    Returns:
        One continuation per context.

    Raises:
        ArgumentError: If ``max_new_tokens < 1`` or ``temperature < 0``.

    Example:
        >>> from r1kit.train.model import build_tokenizer, tiny_model
        >>> tok = build_tokenizer(); model = tiny_model(len(tok), hidden_size=32, num_layers=1)
        >>> len(generate(model, tok, ["What is the pet of kalo?\\n", "Hi"], 5, [], 0.0))
        2
    """
    if max_new_tokens < 1:
        raise ArgumentError(f"`max_new_tokens`: expected a positive count, got {max_new_tokens}")
    if temperature < 0:
        raise ArgumentError(f"`temperature`: expected a value >= 0, got {temperature}")
    if not contexts:
        return []
    _, _, new, _ = _sample_ids(
        model, tokenizer, contexts, max_new_tokens, stop_ids, temperature, generator
    )
    eos = tokenizer.eos_token_id
    stop_set = {*stop_ids, eos}
    texts = []
    for row in new.tolist():
        kept: list[int] = []
        for token in row:
            if token == eos:
                break
            kept.append(token)
            if token in stop_set:
                break
        texts.append(str(tokenizer.decode(kept, skip_special_tokens=False)))
    return texts


class SearchPolicy:
    """A :data:`r1kit.search.GenerateFn` backed by a causal LM: :func:`generate` per turn.

    Args:
        model: The policy.
        tokenizer: Its tokenizer (``</search>`` and ``</answer>`` single tokens).
        max_new_tokens: Most new tokens per turn.
        temperature: Sampling temperature (0: greedy).
        generator: Random generator of the draws.

    Example:
        >>> from r1kit.train.model import build_tokenizer, tiny_model
        >>> tok = build_tokenizer()
        >>> policy = SearchPolicy(tiny_model(len(tok), 32, 1, 2), tok, 4, temperature=0.0)
        >>> len(policy(["What is the pet of kalo?\\n"], ["</search>", "</answer>"]))
        1
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        max_new_tokens: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.generator = generator
        self.stop_ids = [
            int(tokenizer.convert_tokens_to_ids(t)) for t in ("</search>", "</answer>")
        ]

    def __call__(self, contexts: list[str], stop: list[str]) -> list[str]:
        # The stop strings are the two closing tags, single tokens here; the env cuts text too.
        return generate(
            self.model,
            self.tokenizer,
            contexts,
            self.max_new_tokens,
            self.stop_ids,
            self.temperature,
            self.generator,
        )


def _no_parallel_tags(tokenizer: Any) -> ParallelTags:
    """The tokenizer's Parallel-R1 tag ids, or ids past its vocabulary (every parse is causal)."""
    try:
        return ParallelTags.from_tokenizer(tokenizer)
    except ArgumentError:
        v = len(tokenizer)
        return ParallelTags(v, v + 1, v + 2, v + 3, v + 4, v + 5)


def search_traces(
    env: SearchEnv, examples: Sequence[Example], queries: Sequence[str] | None = None
) -> SearchRollout:
    """Templated search traces: a scripted policy searches once and answers with the gold.

    The trace of each example is its prompt, ``<search>query</search>``, the environment's
    observation and ``<answer>gold</answer>``, produced by ``env.rollout`` at step 0 (so the
    observations are exactly those of RL, and ``loss_mask`` leaves them out).

    Args:
        env: The environment (use a schedule with no noise at step 0 for useful documents).
        examples: Prompts and golds.
        queries: The query of each example (default: the prompt, stripped; ``color of kalo``
            for a fact-table question).

    Returns:
        The :class:`r1kit.search.SearchRollout` of the scripted policy.

    Example:
        >>> from r1kit import NoiseSchedule
        >>> from r1kit.train.model import build_tokenizer
        >>> table = fact_table(2, seed=0)
        >>> clean = NoiseSchedule(0.0, 0.0, 1, kind="constant")
        >>> env = SearchEnv(CorpusSimulator(fact_triples(table), k=1), clean, build_tokenizer())
        >>> out = search_traces(env, table[:1])
        >>> print(out.responses[0])
        <search>color of anan</search>
        <BLANKLINE>
        <information>Doc 1: The color of anan is violet.</information>
        <BLANKLINE>
        <answer>violet</answer>
        >>> int(out.loss_mask.sum())  # the policy's tokens: search and answer, 15 + 8
        23
    """
    questions = [e.prompt.strip() for e in examples]
    qs = list(queries) if queries is not None else [_query(q) for q in questions]
    by_prompt: dict[str, int] = {}
    for i, e in enumerate(examples):
        by_prompt.setdefault(e.prompt, i)
    prompts = sorted(by_prompt, key=len, reverse=True)

    def scripted(contexts: list[str], stop: list[str]) -> list[str]:
        out = []
        for c in contexts:
            i = by_prompt[next(p for p in prompts if c.startswith(p))]
            if INFO_CLOSE in c[len(examples[i].prompt) :]:
                out.append(f"<answer>{examples[i].answer}</answer>")
            else:
                out.append(f"<search>{qs[i]}</search>")
        return out

    # Rows that share a prompt get the trace of its first example.
    golds = [examples[by_prompt[e.prompt]].answer for e in examples]
    return env.rollout(scripted, [e.prompt for e in examples], questions, golds, 0)


def _as_rollout(out: SearchRollout) -> Rollout:
    """The trainer's view of a search rollout: observation tokens count as forced."""
    forced = (out.response_mask == 1) & (out.loss_mask == 0)
    return Rollout(
        out.input_ids, out.attention_mask, out.prompt_ids.shape[1], out.responses, forced
    )


def _search_stats(out: SearchRollout, golds: Sequence[str]) -> dict[str, float]:
    n = max(len(out.actions), 1)
    calls = [flag for row in out.noisy for flag in row if flag is not None]
    policy_only = ["".join(t) for t in out.policy_texts]
    return {
        "f1": float(out.rewards.mean()),
        "accuracy": float(qa_scores(policy_only, list(golds), metric="em").mean()),
        "searches_per_sample": len(calls) / n,
        "noisy_share": sum(calls) / len(calls) if calls else 0.0,
        "answer_ratio": sum(a is not None for a in out.answers) / n,
        "response_tokens": float(out.response_mask.sum(1).float().mean()),
        "policy_tokens": float(out.loss_mask.sum(1).float().mean()),
    }


def evaluate_search(
    model: Any,
    tokenizer: Any,
    env: SearchEnv,
    examples: Sequence[Example],
    max_new_tokens: int,
    batch_size: int = 64,
) -> dict[str, float]:
    """Greedy search rollouts on held-out examples: F1, EM, searches per sample, answer ratio.

    Args:
        model: The policy.
        tokenizer: Its tokenizer.
        env: The environment; its schedule at step 1 sets the noise probability.
        examples: Prompts and golds (the question sent to the simulator is the stripped prompt).
        max_new_tokens: Most new tokens per turn.
        batch_size: Rows per rollout batch.

    Returns:
        ``f1``, ``accuracy`` (exact match), ``searches_per_sample``, ``noisy_share``,
        ``answer_ratio``, ``response_tokens``, ``policy_tokens`` (means) and ``n``.
    """
    if not examples:
        raise ArgumentError("`examples`: expected at least one example, got none")
    policy = SearchPolicy(model, tokenizer, max_new_tokens, temperature=0.0)
    totals: dict[str, float] = {}
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        golds = [e.answer for e in chunk]
        out = env.rollout(
            policy,
            [e.prompt for e in chunk],
            [e.prompt.strip() for e in chunk],
            golds,
            1,
            keys=list(range(start, start + len(chunk))),
        )
        for key, value in _search_stats(out, golds).items():
            totals[key] = totals.get(key, 0.0) + value * len(chunk)
    result = {k: round(v / len(examples), 6) for k, v in totals.items()}
    result["n"] = float(len(examples))
    return result


def search_grpo_train(
    model: Any,
    tokenizer: Any,
    env: SearchEnv,
    examples: Sequence[Example],
    config: GRPOConfig,
    log: MetricsLog | None = None,
    stage: str = "rl",
) -> list[dict[str, Any]]:
    """GRPO (or another estimator) with multi-turn search rollouts; trains ``model`` in place.

    Step ``i`` (from 1) samples ``group_size`` rollouts of each of ``prompts_per_step`` prompts
    in ``env`` at noise step ``i``, scores them with the F1 reward the rollout computed, and
    runs :func:`r1kit.train.grpo.grpo_update` with the observation tokens out of the loss (and
    out of the KL). The layout is causal (``config.structured`` is ignored).

    Args:
        model: The policy.
        tokenizer: Its tokenizer (``</search>``, ``</answer>`` and the information tags single
            tokens).
        env: The search environment (its schedule is the noise curriculum).
        examples: Prompts and golds.
        config: The RL settings (``max_new_tokens`` is per turn).
        log: Where each step's metrics go.
        stage: The ``stage`` field of the metric rows.

    Returns:
        One metrics dict per step: ``loss``, ``reward`` (mean F1), ``accuracy`` (EM), ``kl``,
        ``noise_probability``, ``searches_per_sample``, ``noisy_share``, ``answer_ratio``,
        ``response_tokens``, ``policy_tokens``, ``tokens_per_s``, ...

    Raises:
        ArgumentError: If there are no examples.
    """
    if not examples:
        raise ArgumentError("`examples`: expected at least one example, got none")
    cfg = copy.copy(config)
    cfg.structured = False
    tags = _no_parallel_tags(tokenizer)
    ref_model = None
    if cfg.kl_coef > 0:
        ref_model = frozen_copy(model)
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    policy = SearchPolicy(model, tokenizer, cfg.max_new_tokens, cfg.temperature, gen)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    batches = epoch_batches(len(examples), cfg.prompts_per_step, rng)
    rows = []
    bar = progress_bar(cfg.steps, stage, cfg.progress)
    for step in bar:
        picked = next(batches)
        chosen = [examples[i] for i in picked for _ in range(cfg.group_size)]
        golds = [e.answer for e in chosen]
        t0 = time.perf_counter()
        out = env.rollout(
            policy, [e.prompt for e in chosen], [e.prompt.strip() for e in chosen], golds, step
        )
        groups = torch.arange(len(picked)).repeat_interleave(cfg.group_size)
        rollout = _as_rollout(out)
        update = grpo_update(model, opt, rollout, out.rewards, groups, tags, cfg, ref_model)
        elapsed = time.perf_counter() - t0
        row: dict[str, Any] = {
            "stage": stage,
            "step": step,
            "reward": float(out.rewards.mean()),
            "noise_probability": env.schedule.probability(step),
            **_search_stats(out, golds),
            **update,
            "tokens_per_s": round(float(out.attention_mask.sum()) / max(elapsed, 1e-9), 1),
        }
        row = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
        rows.append(log.write(row) if log is not None else row)
        bar.set_postfix(
            f1=f"{row['reward']:.2f}",
            p=f"{row['noise_probability']:.2f}",
            search=f"{row['searches_per_sample']:.2f}",
        )
    return rows


def run_zerosearch(
    config: ZeroSearchConfig | None = None,
    out_dir: str | Path = "runs",
    *,
    model: Any | None = None,
    tokenizer: Any | None = None,
    data: Sequence[Example] | None = None,
    simulator: Any | None = None,
) -> dict[str, Any]:
    """Runs the two ZeroSearch stages (SFT cold start, RL with search) and writes the run folder.

    By default on the generated fact table with the tiny model and a
    :class:`r1kit.search.CorpusSimulator`. With ``model`` and ``tokenizer`` (the search tags are
    added if missing, see :func:`r1kit.train.model.add_tag_tokens`) and ``data``: ``n_eval``
    rows (after a seeded shuffle) are held out, the cold start and RL use the others, and the
    simulator is a :class:`QASimulator` over all rows unless ``simulator`` is given.

    Args:
        config: The settings (default: the demo's).
        out_dir: Parent folder; the run goes to ``out_dir/<config.name>/``.
        model: A causal LM to train instead of the tiny one (needs ``tokenizer``).
        tokenizer: Its tokenizer.
        data: Examples (prompt = question, answer = gold) instead of the fact table.
        simulator: A :class:`r1kit.search.Simulator` (e.g. an ``LLMSimulator``).

    Returns:
        ``{"recipe", "stages", "path", "seconds"}``: per stage its held-out results (``f1``,
        ``accuracy``, ``searches_per_sample``, ... with a clean and a noisy search engine).

    Raises:
        ArgumentError: For a model without tokenizer, or data too small to hold rows out.

    Example:
        >>> import tempfile
        >>> cfg = ZeroSearchConfig(sft_steps=2, rl_steps=1, n_entities=8, n_eval_entities=2,
        ...                        prompts_per_step=2, group_size=2, progress=False)
        >>> result = run_zerosearch(cfg, tempfile.mkdtemp())
        >>> [s["stage"] for s in result["stages"]]
        ['stage1_sft', 'stage2_rl']
    """
    cfg = config or ZeroSearchConfig()
    if (model is None) != (tokenizer is None):
        raise ArgumentError("`tokenizer`: pass model and tokenizer together")
    previous = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, Path(out_dir) / cfg.name, model, tokenizer, data, simulator)
    finally:
        torch.set_num_threads(previous)


def _run(
    cfg: ZeroSearchConfig,
    run: Path,
    model: Any | None,
    tok: Any | None,
    data: Sequence[Example] | None,
    simulator: Any | None,
) -> dict[str, Any]:
    log, done, stages = open_run(run, STAGES, cfg.resume)
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model, tok = model_and_tokenizer(cfg, model, tok, ANSWER_TAGS)
    if data is None:
        table = fact_table(cfg.n_entities, seed=cfg.seed)
        cut = 4 * (cfg.n_entities - cfg.n_eval_entities)
        train, held = table[:cut], table[cut:]
        sim = simulator or CorpusSimulator(fact_triples(table), k=cfg.topk, seed=cfg.seed)
    else:
        held, train = split_held_out(data, cfg.n_eval, cfg.seed)
        pairs = [(e.prompt.strip(), e.answer) for e in held + train]
        sim = simulator or QASimulator(pairs, k=cfg.topk, seed=cfg.seed)

    def env_for(schedule: NoiseSchedule) -> SearchEnv:
        return SearchEnv(
            sim, schedule, tok, cfg.max_turns, cfg.max_obs_tokens, cfg.topk, seed=cfg.seed
        )

    evals = {
        "held_out": env_for(NoiseSchedule(cfg.eval_noise, cfg.eval_noise, 1, kind="constant")),
        "held_out_noisy": env_for(NoiseSchedule(cfg.noise_end, cfg.noise_end, 1, kind="constant")),
    }
    if done:
        model = load_stage_model(run, done[-1])

    def finish(stage: str, t0: float) -> None:
        result: dict[str, Any] = {"stage": stage, "seconds": round(time.perf_counter() - t0, 1)}
        for label, env in evals.items():
            result[label] = evaluate_search(model, tok, env, held, cfg.turn_tokens)
        stages.append(result)
        log.write({"stage": stage, "eval": True, **{k: result[k] for k in evals}})
        finish_stage(run, stage, model, tok, result)

    tags = _no_parallel_tags(tok)
    if "stage1_sft" not in done:
        t0 = time.perf_counter()
        traces = search_traces(env_for(NoiseSchedule(0.0, 0.0, 1, kind="constant")), train)
        p = traces.prompt_ids.shape[1]
        full_loss = torch.cat(
            [torch.zeros_like(traces.prompt_ids, dtype=torch.float), traces.loss_mask.float()],
            dim=1,
        )

        def make_batch(picked: list[int]) -> SFTBatch:
            index = torch.tensor(picked, dtype=torch.long)
            return SFTBatch(
                traces.input_ids[index],
                traces.attention_mask[index],
                full_loss[index],
                torch.full((len(picked),), p, dtype=torch.long),
            )

        sft_cfg = SFTConfig(
            steps=cfg.sft_steps,
            batch_size=cfg.sft_batch_size,
            lr=cfg.sft_lr,
            structured=False,
            max_length=None,
            seed=cfg.seed,
            progress=cfg.progress,
        )
        sft_train_batches(model, make_batch, len(train), sft_cfg, log, "stage1_sft", tags)
        finish("stage1_sft", t0)

    if "stage2_rl" not in done:
        t0 = time.perf_counter()
        rl_cfg = GRPOConfig(
            steps=cfg.rl_steps,
            prompts_per_step=cfg.prompts_per_step,
            group_size=cfg.group_size,
            max_new_tokens=cfg.turn_tokens,
            temperature=cfg.temperature,
            lr=cfg.rl_lr,
            kl_coef=cfg.kl_coef,
            estimator=cfg.estimator,
            structured=False,
            seed=cfg.seed,
            progress=cfg.progress,
        )
        search_grpo_train(
            model, tok, env_for(cfg.noise_schedule()), train, rl_cfg, log, stage="stage2_rl"
        )
        finish("stage2_rl", t0)

    seconds = round(time.perf_counter() - t_start, 1)
    result = {"recipe": "zerosearch", "stages": stages, "path": str(run), "seconds": seconds}
    (run / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    n_params = sum(p.numel() for p in model.parameters())
    desc = f"{type(model).__name__} ({n_params / 1e6:.2f}M parameters)"
    (run / "report.md").write_text(_report(cfg, stages, seconds, desc, len(held), data is None))
    plot_metrics(log.rows, run / "curves.png")
    return result


def _report(
    cfg: ZeroSearchConfig,
    stages: list[dict[str, Any]],
    seconds: float,
    desc: str,
    n_held: int,
    demo: bool,
) -> str:
    where = (
        f"{n_held} held-out questions about {cfg.n_eval_entities} entities that no training "
        "question mentions (their facts are only in the search corpus)"
        if demo
        else f"{n_held} held-out rows of the data file"
    )
    lines = [
        "# ZeroSearch demo" if demo else "# ZeroSearch run",
        "",
        f"{desc}, seed {cfg.seed}; {seconds:.0f} s in total. Stage 1 is a short SFT cold start "
        "on templated search traces (question -> search -> information -> answer, loss on the "
        "policy's tokens only): a random model cannot discover the search protocol by itself. "
        f"Stage 2 is RL ({cfg.estimator}, {cfg.rl_steps} steps) with the policy's own multi-turn "
        f"rollouts in SearchEnv, noise probability rising from {cfg.noise_start} to "
        f"{cfg.noise_end} ({cfg.noise_kind}, base {cfg.noise_base}), F1 reward, retrieved "
        "tokens masked out of the loss.",
        "",
        f"Evaluation: {where}; greedy answers; search with noise probability {cfg.eval_noise} "
        f"(clean) and {cfg.noise_end} (noisy).",
        "",
        "| stage | F1 | EM | searches per sample | answer ratio | F1 (noisy search) | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in stages:
        c, n = s["held_out"], s["held_out_noisy"]
        lines.append(
            f"| {s['stage']} | {c['f1']:.3f} | {pct(c['accuracy'])} | "
            f"{c['searches_per_sample']:.2f} | {pct(c['answer_ratio'])} | {n['f1']:.3f} | "
            f"{s['seconds']} |"
        )
    if len(stages) == 2:
        before, after = stages[0]["held_out"], stages[1]["held_out"]
        lines += [
            "",
            f"- Held-out F1: {before['f1']:.3f} before RL (after the SFT warm start), "
            f"{after['f1']:.3f} after RL (target: higher after RL).",
            f"- Searches per held-out sample after RL: {after['searches_per_sample']:.2f} "
            "(target: above 0, the policy searches).",
            f"- With noisy search (p = {cfg.noise_end}): F1 "
            f"{stages[0]['held_out_noisy']['f1']:.3f} before RL, "
            f"{stages[1]['held_out_noisy']['f1']:.3f} after RL.",
        ]
    lines += [
        "",
        "Per-step curves (reward = F1, noise probability, searches per sample, ...): "
        "`metrics.jsonl`, `curves.png`.",
        "",
    ]
    return "\n".join(lines)
