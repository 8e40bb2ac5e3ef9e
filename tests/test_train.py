"""The trainer: data, tokenizer and tags, structured forward and sampling, SFT, GRPO, recipes, CLI.

Everything is built in the test (character tokenizer, tiny random Qwen2): no download, a few
seconds per test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from r1kit import rewards
from r1kit.errors import ArgumentError
from r1kit.structure import ParallelTags, parse_parallel

pytest.importorskip("transformers")

from r1kit.train import (
    GRPOConfig,
    ParallelR1Config,
    add_tag_tokens,
    build_tokenizer,
    easy_arithmetic,
    encode_sft,
    fact_table,
    get_recipe,
    grpo_update,
    hard_arithmetic,
    load_jsonl,
    sample,
    sequence_log_probs,
    sft_loss,
    tiny_model,
)
from r1kit.train.cli import QUICK, main


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Any:
    # Tiny matrices: one thread is fastest and does not stall on a busy machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tok() -> Any:
    return build_tokenizer()


@pytest.fixture(scope="module")
def tags(tok: Any) -> ParallelTags:
    return ParallelTags.from_tokenizer(tok)


def small_model(tok: Any, seed: int = 0) -> Any:
    return tiny_model(len(tok), hidden_size=32, num_layers=1, num_heads=2, seed=seed)


# -- data -------------------------------------------------------------------------------------


def test_easy_traces_are_correct_and_parallel() -> None:
    data = easy_arithmetic(200, seed=5)
    responses = [e.response for e in data]
    assert rewards.math_scores(responses, [e.answer for e in data]).tolist() == [1.0] * 200
    fmt = rewards.parallel_format(responses)
    assert fmt.valid.all() and fmt.uses_parallel.all()
    assert fmt.paths == [[2]] * 200
    assert {e.prompt[1] for e in data} == {"+", "-", "*"}
    assert easy_arithmetic(5, seed=5) == data[:5]  # seeded


def test_hard_traces_evaluate_left_to_right() -> None:
    data = hard_arithmetic(100, seed=2)
    for e in data:
        expr = e.prompt.removesuffix("=?\n")
        value = int(expr[0])
        for op, d in zip(expr[1::2], expr[2::2], strict=True):
            value = value + int(d) if op == "+" else value - int(d) if op == "-" else value * int(d)
        assert e.answer == str(value), e
        assert len(expr) // 2 in (3, 4)
    scores = rewards.math_scores([e.response for e in data], [e.answer for e in data])
    assert scores.tolist() == [1.0] * 100


def test_fact_table_answers_are_tagged() -> None:
    data = fact_table(5, seed=1)
    assert len(data) == 20
    golds = [e.answer for e in data]
    assert rewards.qa_scores([e.response for e in data], golds).tolist() == [1.0] * 20
    assert len({e.prompt for e in fact_table(144, seed=0)}) == 576  # every name once
    with pytest.raises(ArgumentError, match=r"`n_entities`: expected at most 144"):
        fact_table(145)


def test_load_jsonl_names_line_and_field(tmp_path: Path) -> None:
    good = {"prompt": "1+1=?\n", "answer": 2}
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({"prompt": "2+2=?\n"}) + "\n")
    with pytest.raises(ArgumentError, match=r"data.jsonl line 3: missing field 'answer'"):
        load_jsonl(path)
    path.write_text(json.dumps({"prompt": 5, "answer": "1"}) + "\n")
    with pytest.raises(ArgumentError, match=r"line 1: field 'prompt' expected a string, got int"):
        load_jsonl(path)
    path.write_text("{oops\n")
    with pytest.raises(ArgumentError, match=r"line 1: not valid JSON"):
        load_jsonl(path)
    with pytest.raises(ArgumentError, match=r"no such file"):
        load_jsonl(tmp_path / "missing.jsonl")
    path.write_text(json.dumps(good) + "\n")
    assert load_jsonl(path)[0].answer == "2"


# -- tokenizer, tags, model -------------------------------------------------------------------


def test_tokenizer_round_trips_and_tags_are_single_tokens(tok: Any, tags: ParallelTags) -> None:
    text = easy_arithmetic(1, seed=0)[0].response + "<answer>x</answer>"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    assert tags.ids() == (3, 4, 5, 6, 7, 8)
    assert len(tok.encode("Final Answer:", add_special_tokens=False)) == 1


def test_added_tag_rows_are_distinct_and_near_the_mean() -> None:
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>", "a", "b", "c"])}
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    plain = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    model = tiny_model(len(plain), hidden_size=16, num_layers=1, num_heads=2)
    old = model.get_input_embeddings().weight.detach().clone()
    added = add_tag_tokens(plain, model)
    assert added == ["<Parallel>", "</Parallel>", "<Path>", "</Path>", "<Summary>", "</Summary>"]
    tags = ParallelTags.from_tokenizer(plain)
    w = model.get_input_embeddings().weight.detach()
    assert w.shape[0] >= 12 and torch.equal(w[:6], old)
    new = w[list(tags.ids())]
    assert torch.cdist(new, new).add(torch.eye(6)).min() > 0  # no two rows identical
    spread = (new - old.mean(0)).norm(dim=1)
    assert spread.max() < 0.1 * old.norm(dim=1).mean()  # close to the mean row
    assert add_tag_tokens(plain, model) == []  # idempotent


# -- structured forward and sampling -----------------------------------------------------------


def test_structured_forward_hides_paths_from_each_other(tok: Any, tags: ParallelTags) -> None:
    model = small_model(tok)
    ex = easy_arithmetic(1, seed=3)[0]  # 3*9=?  <Parallel><Path>3*9=27</Path><Path>9*3=27...
    batch = encode_sft(tok, [(ex.prompt, ex.response)])
    changed = batch.input_ids.clone()
    p1 = int(batch.response_start) + 2  # first token inside path 1 ("3")
    changed[0, p1] = tok.convert_tokens_to_ids("7")
    args = (batch.attention_mask, batch.response_start, tags)
    base = sequence_log_probs(model, batch.input_ids, *args)
    diff = (sequence_log_probs(model, changed, *args) - base)[0].abs() > 1e-6
    layout = parse_parallel(batch.input_ids, tags, response_start=batch.response_start)
    path2 = (layout.path_ids[0] == 1).nonzero().flatten().tolist()
    # Path 2's tokens after its <Path> are predicted from path-2 states only: unchanged.
    assert not diff[path2[1:]].any()
    assert diff[p1 : path2[0] + 1].all()  # path 1 itself (and the <Path> it predicts) changed
    causal = sequence_log_probs(model, changed, *args, structured=False)
    assert (causal - sequence_log_probs(model, batch.input_ids, *args, structured=False))[
        0, path2[1:]
    ].abs().max() > 1e-6


class Steered(torch.nn.Module):
    """A model whose logits are ``base`` logits (or zeros) plus ``rule(view)`` per query token.

    ``view`` is what the query may see under the mask it is given: the visible token ids and
    the query's position id. Only the last query is computed unless ``all_positions`` (the
    training pass), so the rule can only use what the layout shows the model.
    """

    def __init__(self, vocab: int, rule: Any, base: Any = None) -> None:
        super().__init__()
        self.vocab, self.rule, self.base = vocab, rule, base
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = base.config if base is not None else type("Cfg", (), {})()
        if base is None:
            self.config._attn_implementation = "sdpa"
        self.all_positions = False

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: Any):  # type: ignore[no-untyped-def]
        b, n = input_ids.shape
        if self.base is not None:
            logits = self.base(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
            ).logits.float()
        else:
            logits = torch.zeros(b, n, self.vocab)
        logits = logits.clone()
        see = (
            attention_mask[:, 0]
            if attention_mask.dtype == torch.bool
            else attention_mask[:, 0] == 0
        )
        for i in range(b):
            for q in range(n) if self.all_positions else [n - 1]:
                visible = input_ids[i][see[i, q]].tolist()
                logits[i, q] += self.rule(visible, int(position_ids[i, q]))
        return type("Out", (), {"logits": logits})()


def _ids(tok: Any, s: str) -> list[int]:
    return list(tok.encode(s, add_special_tokens=False))


def _training_log_probs(model: Steered, rollout: Any, tags: ParallelTags) -> torch.Tensor:
    model.all_positions = True
    with torch.no_grad():
        lp = sequence_log_probs(
            model, rollout.input_ids, rollout.attention_mask, rollout.prompt_len, tags
        )
    model.all_positions = False
    return lp[:, rollout.prompt_len :] * rollout.response_mask


def test_sampling_uses_the_training_parse_and_enforces_two_paths(
    tok: Any, tags: ParallelTags
) -> None:
    # A script keyed on what the query sees: a path sees "<Parallel><Path>" and itself only, so
    # every path writes "1+1=2</Path>" and then closes the block; the sampler must write the
    # second <Path>. The summary sees both paths and goes on with the second script.
    prompts = ["1+1=?\n", "12+30=?\n"]
    path_view = _ids(tok, "<Parallel><Path>1+1=2</Path></Parallel>")
    want = "<Parallel><Path>1+1=2</Path><Path>1+1=2</Path></Parallel><Summary>2</Summary>"
    want += "Final Answer: 2"
    full_view = [*_ids(tok, want), tok.eos_token_id]
    newline = _ids(tok, "\n")[0]

    def rule(visible: list[int], pos: int) -> torch.Tensor:
        out = torch.zeros(len(tok))
        out[1] = 0.01 * pos  # the log-probs depend on the position ids too
        if newline not in visible:  # a prompt token
            return out
        resp = visible[visible.index(newline) + 1 :]  # the prompts end with their only newline
        for script in (path_view, full_view):
            if len(resp) < len(script) and resp == script[: len(resp)]:
                out[script[len(resp)]] += 10.0
                return out
        out[tok.eos_token_id] += 10.0
        return out

    model = Steered(len(tok), rule)
    rollout = sample(model, tok, prompts, tags, 40, temperature=0.0)
    assert rollout.texts == [want, want]
    assert rollout.forced.nonzero().tolist() == [[0, 8], [1, 8]]  # the second <Path> only
    assert rollout.loss_mask[0, 8] == 0 and rollout.response_mask[0, 8] == 1
    # Every token was sampled from the view the training step gives it.
    assert rollout.log_probs is not None
    torch.testing.assert_close(
        rollout.log_probs, _training_log_probs(model, rollout, tags), atol=1e-6, rtol=0
    )
    layout = parse_parallel(
        rollout.input_ids,
        tags,
        attention_mask=rollout.attention_mask,
        response_start=rollout.prompt_len,
    )
    assert [s.kind for s in layout.status] == ["ok", "ok"]
    assert layout.stats()[0].paths_per_block == [2]


def _block_rule(tok: Any, tags: ParallelTags, prompt_len: int, free: Any) -> Any:
    """Steers a well-formed response: <Parallel>, paths of 3 free tokens, a 50/50 choice after
    each </Path>, <Summary> of 3 free tokens, <eos>. ``free(out)`` sets the free-token logits."""
    eos = tok.eos_token_id
    special = [*tags.ids(), eos]

    def rule(visible: list[int], pos: int) -> torch.Tensor:
        resp = visible[prompt_len:]
        out = torch.zeros(len(tok))
        marks = [j for j, t in enumerate(resp) if t in special]
        last = resp[marks[-1]] if marks else None
        since = len(resp) - 1 - marks[-1] if marks else 0
        if not resp:
            out[tags.parallel] = 40.0
        elif last == tags.parallel:
            out[tags.path] = 40.0
        elif last in (tags.path, tags.summary) and since < 3:
            out[special] = -40.0
            free(out)
        elif last == tags.path:
            out[tags.path_end] = 40.0
        elif last == tags.path_end:
            out[[tags.path, tags.parallel_end]] = 40.0  # the model's own choice
        elif last == tags.parallel_end:
            out[tags.summary] = 40.0
        elif last == tags.summary:
            out[tags.summary_end] = 40.0
        else:
            out[eos] = 40.0
        return out

    return rule


def test_sampled_log_probs_equal_one_structured_training_pass(tok: Any, tags: ParallelTags) -> None:
    # A real tiny Qwen2 writes the free tokens; the rule only keeps the structure well formed.
    # Equal log-probs mean every path saw only the prefix and itself, at the spec's positions,
    # and the summary saw everything, exactly as in one training forward pass.
    prompt = "3+4=?\n"
    base = small_model(tok, seed=3)
    rule = _block_rule(tok, tags, len(_ids(tok, prompt)), lambda out: None)
    model = Steered(len(tok), rule, base)
    gen = torch.Generator().manual_seed(0)
    rollout = sample(model, tok, [prompt] * 8, tags, 60, generator=gen, min_paths=2, max_paths=4)
    layout = parse_parallel(
        rollout.input_ids,
        tags,
        attention_mask=rollout.attention_mask,
        response_start=rollout.prompt_len,
    )
    assert {s.kind for s in layout.status} == {"ok"}
    counts = [s.paths_per_block[0] for s in layout.stats()]
    assert max(counts) >= 3 and min(counts) == 2
    assert rollout.log_probs is not None
    train = _training_log_probs(model, rollout, tags)
    torch.testing.assert_close(rollout.log_probs, train, atol=1e-5, rtol=0)
    # The check has teeth: under plain causal attention the later paths' tokens differ.
    model.all_positions = True
    with torch.no_grad():
        causal = sequence_log_probs(
            model, rollout.input_ids, rollout.attention_mask, rollout.prompt_len, tags, False
        )[:, rollout.prompt_len :]
    model.all_positions = False
    assert (causal - train).abs().max() > 1e-3


def test_path_count_comes_from_the_model_up_to_the_cap(tok: Any, tags: ParallelTags) -> None:
    # Each path writes three of "a"/"b" (50/50) and then, seeing only itself, closes the block
    # when its last letter is "b". Path 0 is always followed by a forced <Path> (min_paths=2),
    # the 4th path by a forced </Parallel> (max_paths=4): the count is 1 + the index of the
    # first "b"-ending path among paths 1..2, or 4.
    prompt = "1+1=?\n"
    a, b = _ids(tok, "a")[0], _ids(tok, "b")[0]
    start = len(_ids(tok, prompt))

    def free(out: torch.Tensor) -> None:
        out[:] = -40.0
        out[[a, b]] = 0.0

    steer = _block_rule(tok, tags, start, free)

    def rule(visible: list[int], pos: int) -> torch.Tensor:
        out = steer(visible, pos)
        resp = visible[start:]
        if resp and resp[-1] == tags.path_end:  # the choice: stop after a "b" path
            out[tags.parallel_end if resp[-2] == b else tags.path] += 10.0
        return out

    model = Steered(len(tok), rule)
    gen = torch.Generator().manual_seed(1)
    rollout = sample(model, tok, [prompt] * 24, tags, 60, generator=gen, min_paths=2, max_paths=4)
    layout = parse_parallel(
        rollout.input_ids,
        tags,
        attention_mask=rollout.attention_mask,
        response_start=rollout.prompt_len,
    )
    assert {s.kind for s in layout.status} == {"ok"}
    counts = []
    for i, text in enumerate(rollout.texts):
        paths = text.split("</Parallel>")[0].split("<Path>")[1:]
        letters = [p[p.index("</Path>") - 1] for p in paths]
        want = 4 if "b" not in letters[1:3] else letters[1:3].index("b") + 2
        assert len(paths) == want, text
        assert layout.stats()[i].paths_per_block == [want]
        counts.append(want)
        # Forced: the <Path> after path 0 always; the </Parallel> after path 4 when there is one.
        resp = rollout.input_ids[i, rollout.prompt_len :].tolist()
        ends = [j for j, t in enumerate(resp) if t == tags.path_end]
        expect = [ends[0] + 1] + ([ends[3] + 1] if want == 4 else [])
        assert rollout.forced[i].nonzero().flatten().tolist() == expect
        assert resp[ends[0] + 1] == tags.path
        assert resp[ends[-1] + 1] == tags.parallel_end
    assert {2, 3, 4} <= set(counts)
    assert rollout.log_probs is not None
    torch.testing.assert_close(
        rollout.log_probs, _training_log_probs(model, rollout, tags), atol=1e-5, rtol=0
    )


def test_blocks_cut_by_the_length_cap_stay_aligned(tok: Any, tags: ParallelTags) -> None:
    prompt = "1+1=?\n"
    rule = _block_rule(tok, tags, len(_ids(tok, prompt)), lambda out: None)
    model = Steered(len(tok), rule, small_model(tok, seed=2))
    gen = torch.Generator().manual_seed(0)
    for cap in (1, 2, 7, 12, 16):
        rollout = sample(model, tok, [prompt] * 6, tags, cap, generator=gen)
        assert rollout.input_ids.shape[1] - rollout.prompt_len <= cap
        assert rollout.forced.shape == rollout.response_mask.shape
        layout = parse_parallel(
            rollout.input_ids,
            tags,
            attention_mask=rollout.attention_mask,
            response_start=rollout.prompt_len,
        )
        assert {s.kind for s in layout.status} <= {"ok", "truncated"}
        for i, s in enumerate(layout.status):  # a row stops at <eos> or exactly at the cap
            n = int(rollout.response_mask[i].sum())
            last = int(rollout.input_ids[i, rollout.prompt_len + n - 1])
            assert last == tok.eos_token_id or n == cap
            assert s.kind == "ok" or n == cap
        assert rollout.log_probs is not None
        torch.testing.assert_close(
            rollout.log_probs, _training_log_probs(model, rollout, tags), atol=1e-5, rtol=0
        )


# -- SFT and GRPO -----------------------------------------------------------------------------


def test_sft_loss_falls_on_a_fixed_batch(tok: Any, tags: ParallelTags) -> None:
    torch.manual_seed(0)
    model = small_model(tok)
    data = easy_arithmetic(8, seed=1)
    batch = encode_sft(tok, [(e.prompt, e.response) for e in data])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = sft_loss(model, batch, tags)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 4.0  # about log(vocab) at random init
    assert losses[-1] < 0.6 * losses[0]


def test_sft_loss_ignores_prompt_tokens(tok: Any, tags: ParallelTags) -> None:
    model = small_model(tok)
    a = encode_sft(tok, [("1+1=?\n", "Final Answer: 2")])
    b = encode_sft(tok, [("1+1=?\n", "Final Answer: 2")])
    b.loss_mask[0, : int(b.response_start)] = 1.0  # a wrong mask would also count the prompt
    assert sft_loss(model, a, tags).item() != pytest.approx(sft_loss(model, b, tags).item())
    lp = sequence_log_probs(model, a.input_ids, a.attention_mask, a.response_start, tags)
    want = -lp[0, int(a.response_start) :].mean()
    assert sft_loss(model, a, tags).item() == pytest.approx(want.item(), rel=1e-6)


def test_grpo_step_moves_log_probs_along_the_advantage(tok: Any, tags: ParallelTags) -> None:
    model = small_model(tok, seed=1)
    gen = torch.Generator().manual_seed(0)
    rollout = sample(model, tok, ["3+4=?\n"] * 4, tags, 12, generator=gen)
    p = rollout.prompt_len

    def seq_lp() -> torch.Tensor:
        with torch.no_grad():
            lp = sequence_log_probs(model, rollout.input_ids, rollout.attention_mask, p, tags)[
                :, p:
            ]
        return (lp * rollout.loss_mask).sum(1)

    before = seq_lp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cfg = GRPOConfig(steps=1, progress=False)
    rewards_ = torch.tensor([1.0, 0.0, 0.0, 0.0])
    out = grpo_update(model, opt, rollout, rewards_, torch.zeros(4, dtype=torch.long), tags, cfg)
    after = seq_lp()
    assert after[0] > before[0]  # the rewarded sample became more likely
    assert (after[1:] < before[1:]).all()  # the others less likely
    assert out["advantage_abs"] > 0 and out["kl"] == 0.0


def test_grpo_kl_needs_a_reference(tok: Any, tags: ParallelTags) -> None:
    model = small_model(tok)
    rollout = sample(model, tok, ["1+1=?\n"] * 2, tags, 4)
    opt = torch.optim.AdamW(model.parameters())
    cfg = GRPOConfig(kl_coef=0.1, progress=False)
    with pytest.raises(ArgumentError, match="ref_model"):
        grpo_update(model, opt, rollout, torch.ones(2), torch.zeros(2), tags, cfg)
    with pytest.raises(ArgumentError, match="estimator"):
        GRPOConfig(estimator="ppo")


# -- ZeroSearch: search rollouts, observation mask, noise curriculum ---------------------------


def _search_env(tok: Any, schedule: Any, facts: list[Any], k: int = 2) -> Any:
    from r1kit.search import CorpusSimulator, SearchEnv

    return SearchEnv(CorpusSimulator(facts, k=k), schedule, tok, max_turns=2, max_obs_tokens=160)


def test_cached_sampling_sees_the_training_distribution(tok: Any) -> None:
    from r1kit.train.zerosearch import _no_parallel_tags, _sample_ids

    model = small_model(tok, seed=3)
    contexts = ["What is the pet of kalo?\n", "Hi\n", "<search>x</search>"]  # left-padded
    gen = torch.Generator().manual_seed(0)
    ids, mask, new, lp = _sample_ids(model, tok, contexts, 12, [], 1.0, gen)
    full = torch.cat([ids, new], dim=1)
    full_mask = torch.cat([mask, torch.ones_like(new)], dim=1)
    p = ids.shape[1]
    want = sequence_log_probs(model, full, full_mask, p, _no_parallel_tags(tok), structured=False)
    torch.testing.assert_close(lp, want[:, p:].detach(), atol=1e-5, rtol=0)
    assert len({tuple(r) for r in new.tolist()}) == 3  # the rows really differ


def test_search_traces_mask_the_observations(tok: Any) -> None:
    from r1kit import NoiseSchedule
    from r1kit.train.zerosearch import _as_rollout, fact_triples, search_traces

    table = fact_table(3, seed=0)
    env = _search_env(tok, NoiseSchedule(0.0, 0.0, 1, kind="constant"), fact_triples(table))
    out = search_traces(env, table[:2])
    entity, relation, value = fact_triples(table)[0]
    assert relation == "color"
    assert out.responses[0] == (
        f"<search>color of {entity}</search>\n\n<information>Doc 1: The color of {entity} is "
        f"{value}.\nDoc 2: {value} is the color of {entity}.</information>\n\n"
        f"<answer>{value}</answer>"
    )
    assert out.rewards.tolist() == [1.0, 1.0]
    # The loss mask from the recorded spans = the one from token ids (Rust) = the policy text.
    assert torch.equal(env.observation_mask(out.response_ids, out.response_mask), out.loss_mask)
    kept = out.response_ids[0][out.loss_mask[0] == 1].tolist()
    assert tok.decode(kept) == f"<search>color of {entity}</search><answer>{value}</answer>"
    rollout = _as_rollout(out)  # the trainer's view: observations are forced, out of the loss
    assert torch.equal(rollout.loss_mask, out.loss_mask.float())
    assert torch.equal(rollout.input_ids, out.input_ids)
    assert rollout.prompt_len == out.prompt_ids.shape[1]


def test_search_grpo_step_moves_policy_tokens_along_the_advantage(tok: Any) -> None:
    from r1kit import NoiseSchedule
    from r1kit.train.zerosearch import (
        _as_rollout,
        _no_parallel_tags,
        _search_stats,
        fact_triples,
        search_traces,
    )

    table = fact_table(2, seed=0)
    env = _search_env(tok, NoiseSchedule(0.0, 0.0, 1, kind="constant"), fact_triples(table))
    out = search_traces(env, table[:2])
    stats = _search_stats(out, [e.answer for e in table[:2]])
    assert (stats["f1"], stats["searches_per_sample"], stats["answer_ratio"]) == (1.0, 1.0, 1.0)
    rollout = _as_rollout(out)
    model, tags = small_model(tok, seed=1), _no_parallel_tags(tok)
    p = rollout.prompt_len

    def seq_lp() -> torch.Tensor:
        with torch.no_grad():
            lp = sequence_log_probs(
                model, rollout.input_ids, rollout.attention_mask, p, tags, structured=False
            )
        return (lp[:, p:] * rollout.loss_mask).sum(1)

    before = seq_lp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cfg = GRPOConfig(steps=1, structured=False, progress=False)
    groups = torch.zeros(2, dtype=torch.long)
    grpo_update(model, opt, rollout, torch.tensor([1.0, 0.0]), groups, tags, cfg)
    after = seq_lp()
    assert after[0] > before[0] and after[1] < before[1]


def test_reinforce_plus_plus_is_an_estimator() -> None:
    from r1kit.train import ESTIMATORS, ZeroSearchConfig

    assert ZeroSearchConfig(estimator="reinforce_plus_plus").estimator == "reinforce_plus_plus"
    r = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    adv = ESTIMATORS["reinforce_plus_plus"](r, torch.ones(2, 2), torch.zeros(2))
    assert adv[0, 0] > 0 > adv[1, 0]  # whitened returns: the rewarded row up, the other down
    # Every group estimator: within a group of two, the rewarded row gets the larger advantage.
    groups = torch.tensor([0, 0, 1, 1])
    r4 = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    for name, estimate in ESTIMATORS.items():
        adv = estimate(r4, torch.ones(4, 2), groups)
        assert adv.shape == (4, 2), name
        assert adv[0, 0] > adv[1, 0] and adv[3, 0] > adv[2, 0], name


# -- recipes and CLI --------------------------------------------------------------------------


def test_unknown_recipe_and_config_key(tmp_path: Path) -> None:
    from r1kit.train import ZeroSearchConfig, run_zerosearch

    with pytest.raises(
        ArgumentError, match=r"unknown recipe 'parallel-r2' \(known: parallel_r1, zerosearch\)"
    ):
        get_recipe("parallel-r2")
    assert get_recipe("zerosearch") is run_zerosearch
    assert get_recipe("Zero-Search") is run_zerosearch
    with pytest.raises(ArgumentError, match=r"unknown key 'sft_step'"):
        ParallelR1Config.from_dict({"sft_step": 3})
    with pytest.raises(ArgumentError, match=r"unknown key 'stage3_steps'"):
        ZeroSearchConfig.from_dict({"stage3_steps": 3})  # a Parallel-R1 key
    with pytest.raises(ArgumentError, match=r"key 'rl_steps': expected int, got float"):
        ZeroSearchConfig.from_dict({"rl_steps": 2.5})
    with pytest.raises(ArgumentError, match=r"`estimator`: expected one of"):
        ZeroSearchConfig.from_dict({"estimator": "ppo"})
    with pytest.raises(ArgumentError, match=r"noise settings .*`end`: expected a probability"):
        ZeroSearchConfig.from_dict({"noise_end": 1.5})
    bad = tmp_path / "bad.toml"
    bad.write_text("[zerosearch]\nrl_step = 3\n")
    with pytest.raises(ArgumentError, match=r"unknown key 'rl_step'"):
        main(["demo", "zerosearch", "--config", str(bad), "--out", str(tmp_path)])
    bad.write_text("[zero]\nrl_steps = 3\n")
    with pytest.raises(ArgumentError, match=r"table \[zero\] names no recipe"):
        main(["demo", "all", "--config", str(bad), "--out", str(tmp_path)])
    bad.write_text("name = 'x'\n")
    with pytest.raises(ArgumentError, match=r"top-level 'name' would send every recipe"):
        main(["demo", "all", "--config", str(bad), "--out", str(tmp_path)])
    assert not list(tmp_path.glob("*/metrics.jsonl"))  # every error came before any run
    with pytest.raises(ArgumentError, match=r"key 'sft_steps': expected int, got str"):
        ParallelR1Config.from_dict({"sft_steps": "3"})
    with pytest.raises(ArgumentError, match="unknown recipe 'nope'"):
        main(["demo", "nope"])


def test_cli_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ArgumentError, match="no such file"):
        main(["demo", "parallel-r1", "--config", str(tmp_path / "x.toml")])
    bad = tmp_path / "bad.toml"
    bad.write_text("stage9_steps = 3\n")
    with pytest.raises(ArgumentError, match="unknown key 'stage9_steps'"):
        main(["demo", "parallel-r1", "--config", str(bad), "--out", str(tmp_path)])


def test_quick_demo_writes_metrics_and_report(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        "seed = 0\n[parallel_r1]\nname = 'quick'\nsft_steps = 10\n[zerosearch]\nname = 'zs'\n"
    )
    argv = ["demo", "all", "--quick", "--no-progress", "--out", str(tmp_path), "--config"]
    assert main([*argv, str(config)]) == 0
    quick = QUICK["parallel_r1"]
    run = tmp_path / "quick"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "eval" not in r]
    stages = [r["stage"] for r in steps]
    assert stages.count("stage1_sft") == 10
    assert stages.count("stage2_grpo_easy") == quick["stage2_steps"]
    assert stages.count("stage3_grpo_hard") == quick["stage3_steps"]
    grpo = [r for r in steps if r["stage"] != "stage1_sft"]
    for key in ("loss", "reward", "accuracy", "parallel_ratio", "kl", "tokens_per_s"):
        assert all(isinstance(r[key], float | int) for r in grpo), key
    evals = [r for r in rows if r.get("eval")]
    assert [r["stage"] for r in evals] == ["stage1_sft", "stage2_grpo_easy", "stage3_grpo_hard"]
    report = (run / "report.md").read_text()
    assert "| stage1_sft |" in report and "| stage3_grpo_hard |" in report
    results = json.loads((run / "results.json").read_text())
    assert results["stages"][0]["hard"]["n"] == quick["n_eval"]
    assert (run / "checkpoints" / "stage3_grpo_hard" / "config.json").is_file()
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # ZeroSearch: its own folder, the same files, the search metrics on every RL line.
    run = tmp_path / "zs"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in rows if r["stage"] == "stage2_rl" and "eval" not in r]
    assert len(rl) == QUICK["zerosearch"]["rl_steps"]
    for key in ("loss", "reward", "accuracy", "kl", "noise_probability", "searches_per_sample"):
        assert all(isinstance(r[key], float | int) for r in rl), key
    # 0 -> 0.5 over 2 steps, base 4: p(1) = (4 ** 0.5 - 1) / 3 * 0.5
    assert [r["noise_probability"] for r in rl] == [0.166667, 0.5]
    report = (run / "report.md").read_text()
    assert "| stage1_sft |" in report and "| stage2_rl |" in report
    assert "before RL (after the SFT warm start)" in report and "Searches per" in report
    for stage in ("stage1_sft", "stage2_rl"):
        assert (run / "checkpoints" / stage / "eval.json").is_file()
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_seeded_runs_repeat(tmp_path: Path) -> None:
    from r1kit.train import run_parallel_r1

    def steps(name: str) -> list[dict[str, Any]]:
        cfg = ParallelR1Config.from_dict({**QUICK["parallel_r1"], "name": name, "progress": False})
        run_parallel_r1(cfg, tmp_path)
        text = (tmp_path / name / "metrics.jsonl").read_text()
        rows = [json.loads(x) for x in text.splitlines()]
        return [{k: v for k, v in r.items() if k not in ("time_s", "tokens_per_s")} for r in rows]

    a, b = steps("a"), steps("b")
    quick = QUICK["parallel_r1"]
    assert len(a) == quick["sft_steps"] + quick["stage2_steps"] + quick["stage3_steps"] + 3
    assert a == b


def test_train_command_on_a_saved_model_and_data_file(tmp_path: Path) -> None:
    from r1kit.train import save_jsonl

    tok = build_tokenizer()
    model_dir = tmp_path / "model"
    small_model(tok).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    data = tmp_path / "arith.jsonl"
    save_jsonl(easy_arithmetic(40, seed=4) + hard_arithmetic(40, seed=4), data)
    base = ["train", "--recipe", "parallel_r1", "--data", str(data), "--out", str(tmp_path)]
    with pytest.raises(ArgumentError, match=r"`--model`: no such directory"):
        main([*base, "--model", str(tmp_path / "nope")])
    with pytest.raises(ArgumentError, match=r"`--model` .*: not a loadable causal LM"):
        main([*base, "--model", str(tmp_path)])
    with pytest.raises(ArgumentError, match="unknown recipe 'grpo'"):
        main(["train", "--recipe", "grpo", "--model", str(model_dir), "--data", str(data)])
    assert main([*base, "--model", str(model_dir), "--quick", "--no-progress"]) == 0
    report = (tmp_path / "arith" / "report.md").read_text()
    assert "| stage | held_out accuracy | held_out parallel ratio | seconds |" in report
    assert "Qwen2ForCausalLM" in report
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "1+1=?", "response": "2"}\n')
    with pytest.raises(ArgumentError, match=r"bad.jsonl line 1: missing field 'answer'"):
        main([*base[:3], "--data", str(bad), "--model", str(model_dir)])


def test_resume_after_stage_1_gives_the_uninterrupted_run(tmp_path: Path) -> None:
    import shutil

    argv = ["demo", "parallel-r1", "--quick", "--no-progress", "--out", str(tmp_path)]
    assert main(argv) == 0
    run = tmp_path / "parallel-r1"

    def rows() -> list[dict[str, Any]]:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        drop = ("time_s", "tokens_per_s")
        return [{k: v for k, v in json.loads(x).items() if k not in drop} for x in lines]

    full = rows()
    # Interrupted during stage 2: stages 2 and 3 left no finished checkpoint.
    shutil.rmtree(run / "checkpoints" / "stage3_grpo_hard")
    (run / "checkpoints" / "stage2_grpo_easy" / "eval.json").unlink()
    stage1 = run / "checkpoints" / "stage1_sft" / "eval.json"
    written = stage1.stat().st_mtime_ns
    assert main([*argv, "--resume"]) == 0
    assert stage1.stat().st_mtime_ns == written  # stage 1 was loaded, not retrained
    resumed = rows()
    assert resumed == full
    assert [r["stage"] for r in resumed if r.get("eval")] == [
        "stage1_sft",
        "stage2_grpo_easy",
        "stage3_grpo_hard",
    ]


def test_console_script_reports_errors_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from r1kit.train.cli import run

    monkeypatch.setattr("sys.argv", ["r1kit", "demo", "zero-search-r2"])
    with pytest.raises(SystemExit) as exit_info:
        run()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("r1kit: error: ArgumentError: `recipe`: unknown recipe 'zero-search-r2'")


def test_zerosearch_resume_gives_the_uninterrupted_run(tmp_path: Path) -> None:
    argv = ["demo", "zerosearch", "--quick", "--no-progress", "--out", str(tmp_path)]
    assert main(argv) == 0
    run = tmp_path / "zerosearch"

    def rows() -> list[dict[str, Any]]:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        drop = ("time_s", "tokens_per_s")
        return [{k: v for k, v in json.loads(x).items() if k not in drop} for x in lines]

    full = rows()
    (run / "checkpoints" / "stage2_rl" / "eval.json").unlink()  # interrupted during RL
    stage1 = run / "checkpoints" / "stage1_sft" / "eval.json"
    written = stage1.stat().st_mtime_ns
    assert main([*argv, "--resume"]) == 0
    assert stage1.stat().st_mtime_ns == written
    assert rows() == full


def test_train_zerosearch_on_a_parquet_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from r1kit.train import Example, load_data

    tok = build_tokenizer()
    model_dir = tmp_path / "model"
    small_model(tok).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    rows = fact_table(10, seed=2)
    data = tmp_path / "qa.parquet"
    pq.write_table(
        pa.table({"prompt": [e.prompt for e in rows], "answer": [e.answer for e in rows]}), data
    )
    assert load_data(data) == [Example(e.prompt, "", e.answer) for e in rows]
    base = ["train", "--recipe", "zerosearch", "--out", str(tmp_path), "--no-progress"]
    with pytest.raises(ArgumentError, match=r"`--model`: no such directory"):
        main([*base, "--data", str(data), "--model", str(tmp_path / "nope")])
    assert main([*base, "--data", str(data), "--model", str(model_dir), "--quick"]) == 0
    report = (tmp_path / "qa" / "report.md").read_text()
    assert report.startswith("# ZeroSearch run") and "8 held-out rows of the data file" in report
    # Bad input: a missing cell names the row and the field; other formats; no pyarrow.
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"prompt": ["a?", "b?", "c?"], "answer": ["1", "2", None]}), bad)
    with pytest.raises(ArgumentError, match=r"bad.parquet row 3: missing field 'answer'"):
        main([*base, "--data", str(bad), "--model", str(model_dir)])
    pq.write_table(pa.table({"prompt": ["a?"]}), bad)
    with pytest.raises(ArgumentError, match=r"bad.parquet row 1: missing field 'answer'"):
        load_data(bad)
    with pytest.raises(ArgumentError, match=r"expected a .jsonl or .parquet file"):
        main([*base, "--data", str(tmp_path / "qa.csv"), "--model", str(model_dir)])
    monkeypatch.setitem(__import__("sys").modules, "pyarrow.parquet", None)
    with pytest.raises(ArgumentError, match=r"needs pyarrow"):
        load_data(data)
