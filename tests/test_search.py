"""Simulated search (spec: shared/spec/search_sim.md): scripted rollouts checked exactly, the
reference's bugs as regression tests, simulators, the observation mask from ids and from spans.

The tokenizer is built in code (byte-level, one token per byte, the protocol's tags added as
single tokens), so token counts are the byte counts of the pieces and nothing is downloaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

import r1kit
from r1kit.search import (
    INFO_CLOSE,
    INFO_OPEN,
    INVALID_ACTION_MESSAGE,
    STOP,
    TAGS,
    CorpusSimulator,
    LLMSimulator,
    SearchEnv,
    SimRequest,
    SimulatorError,
    format_documents,
    observation_mask,
    parse_documents,
    spans_mask,
)

FACTS = [
    ("France", "capital", "Paris"),
    ("Italy", "capital", "Rome"),
    ("France", "currency", "euro"),
    ("Hamlet", "author", "William Shakespeare"),
    ("Japan", "capital", "Tokyo"),
    ("Mars", "moons", "Phobos and Deimos"),
    ("Python", "creator", "Guido van Rossum"),
]
OBS = "\n\n{open}{docs}{close}\n\n"
NEVER = pytest.approx  # alias keeps lines short in float checks


def byte_tokenizer() -> Tokenizer:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE({c: i for i, c in enumerate(alphabet)}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(TAGS))
    return tok


TOK = byte_tokenizer()


def enc(text: str) -> list[int]:
    return list(TOK.encode(text, add_special_tokens=False).ids)


def obs(docs: str) -> str:
    return OBS.format(open=INFO_OPEN, docs=docs, close=INFO_CLOSE)


def scripted(script: dict[int, list[str]]) -> Callable[[list[str], list[str]], list[str]]:
    """A policy that answers row r's n-th generation with script[r][n] (rows told by prompt)."""
    calls: dict[int, int] = {}

    def generate(contexts: list[str], stop: list[str]) -> list[str]:
        assert stop == list(STOP)
        out = []
        for c in contexts:
            row = int(re.match(r"Q(\d+):", c).group(1))  # type: ignore[union-attr]
            n = calls.get(row, 0)
            calls[row] = n + 1
            out.append(script[row][min(n, len(script[row]) - 1)])
        return out

    return generate


def env(p: float = 0.0, **kw: object) -> SearchEnv:
    sim = kw.pop("simulator", None) or CorpusSimulator(FACTS, k=2)
    schedule = r1kit.NoiseSchedule(p, p, 100, kind="constant")
    return SearchEnv(sim, schedule, TOK, topk=2, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the scripted transcript


def test_scripted_rollout_transcript_mask_rewards(tensor_path: str) -> None:
    policy = scripted(
        {
            0: [
                "<think>look it up</think><search> capital of France </search>",
                "<answer>Paris</answer>",
            ],
            1: ["I am not sure.", "<answer>Shakespeare</answer> trailing text"],
            2: ["hmm"],
        }
    )
    prompts = ["Q0: capital of France?", "Q1: who wrote Hamlet?", "Q2: moons of Mars?"]
    out = env().rollout(
        policy, prompts, ["capital of France?", "who wrote Hamlet?", "moons of Mars?"],
        ["Paris", ["William Shakespeare"], "Phobos and Deimos"], step=5,
    )  # fmt: skip
    useful = "Doc 1: The capital of France is Paris.\nDoc 2: Paris is the capital of France."
    invalid = obs(INVALID_ACTION_MESSAGE)
    pieces = [
        [
            ("<think>look it up</think><search> capital of France </search>", 1),
            (obs(useful), 0),
            ("<answer>Paris</answer>", 1),
        ],
        [("I am not sure.", 1), (invalid, 0), ("<answer>Shakespeare</answer>", 1)],
        [("hmm", 1), (invalid, 0), ("hmm", 1), (invalid, 0), ("hmm", 1)],
    ]
    for row, row_pieces in enumerate(pieces):
        assert out.responses[row] == "".join(text for text, _ in row_pieces)
        ids = [t for text, _ in row_pieces for t in enc(text)]
        mask = [m for text, m in row_pieces for _ in enc(text)]
        n = len(ids)
        assert out.response_ids[row, :n].tolist() == ids
        assert out.response_mask[row].tolist() == [1] * n + [0] * (out.response_ids.shape[1] - n)
        assert out.loss_mask[row].tolist() == mask + [0] * (out.response_ids.shape[1] - n)
        assert out.token_level_rewards[row, n - 1] == out.rewards[row]
        assert out.token_level_rewards[row].count_nonzero() <= 1
    assert out.actions == [
        ["search", "answer"],
        ["invalid", "answer"],
        ["invalid", "invalid", "invalid"],
    ]
    assert out.queries == [["capital of France", None], [None, None], [None, None, None]]
    assert out.noisy == [[False, None], [None, None], [None, None, None]]
    assert out.requests == [
        SimRequest("capital of France", "capital of France?", "Paris", False, 0, 0, ("Paris",))
    ]
    assert out.simulator_calls == 1
    assert out.answers == ["Paris", "Shakespeare", None]
    # F1("Shakespeare", "William Shakespeare") = 2 * 1 * 0.5 / 1.5.
    assert out.rewards.tolist() == NEVER([1.0, 2 / 3, 0.0])
    # The mask from token ids agrees with the spans the rollout recorded.
    from_ids = env().observation_mask(out.response_ids, out.response_mask)
    assert torch.equal(from_ids, out.loss_mask)
    # verl layout: prompts left-padded, one attention mask over both.
    p = out.prompt_ids.shape[1]
    assert torch.equal(out.input_ids[:, p:], out.response_ids)
    assert out.attention_mask[0, : p - len(enc(prompts[0]))].sum() == 0
    assert out.input_ids[2, p - len(enc(prompts[2])) : p].tolist() == enc(prompts[2])


def test_policy_text_is_cut_at_stop_strings_and_observation_tags() -> None:
    policy = scripted(
        {
            0: ["<search>capital of Italy</search> and more <answer>x</answer>", "<answer>Rome"],
            1: [f"I will make it up {INFO_OPEN} Paris {INFO_CLOSE}", "<answer>Paris</answer>"],
        }
    )
    out = env().rollout(policy, ["Q0: a", "Q1: b"], ["a", "b"], ["Rome", "Paris"], 1)
    assert out.policy_texts[0] == ["<search>capital of Italy</search>"] + ["<answer>Rome"] * 2
    # An unclosed answer is no answer; the final turn still runs and makes no call.
    assert out.actions[0] == ["search", "invalid", "invalid"]
    assert out.policy_texts[1][0] == "I will make it up "
    assert out.actions[1] == ["invalid", "answer"]
    assert out.rewards.tolist() == [0.0, 1.0]
    # The policy's own information tags never reach the ids: the two masks still agree.
    assert torch.equal(env().observation_mask(out.response_ids, out.response_mask), out.loss_mask)


def test_answer_inside_documents_is_not_the_policy_answer() -> None:
    class Leaky:
        k = 2

        def __call__(self, requests: list[SimRequest]) -> list[str]:
            return ["Doc 1: <answer>Paris</answer>\nDoc 2: x"] * len(requests)

    policy = scripted({0: ["<search>q</search>", "no idea"]})
    out = env(simulator=Leaky(), max_turns=1).rollout(policy, ["Q0: x"], ["x"], ["Paris"], 1)
    assert out.answers == [None]
    assert out.rewards.tolist() == [0.0]


FRAGMENTS = ["<search>", "</search>", "<answer>", "</answer>", "capital of Peru", " ", "\n\n",
             INFO_OPEN, INFO_CLOSE, "x\n", "Doc 1:"]  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(
    scripts=st.lists(
        st.lists(st.lists(st.sampled_from(FRAGMENTS), max_size=8).map("".join), min_size=1,
                 max_size=3),
        min_size=1, max_size=4,
    ),
    max_turns=st.integers(1, 2), p=st.sampled_from([0.0, 0.5, 1.0]),
)  # fmt: skip
def test_any_policy_text_masks_from_ids_and_spans_agree(
    scripts: list[list[str]], max_turns: int, p: float
) -> None:
    e = env(p, max_turns=max_turns)
    policy = scripted(dict(enumerate(scripts)))
    out = e.rollout(policy, [f"Q{i}: x" for i in range(len(scripts))], ["q"] * len(scripts),
                    ["Lima"] * len(scripts), 1)  # fmt: skip
    assert torch.equal(e.observation_mask(out.response_ids, out.response_mask), out.loss_mask)
    for row, texts in enumerate(out.policy_texts):
        # The loss covers exactly the policy's tokens; every observation is one recorded span.
        assert int(out.loss_mask[row].sum()) == sum(len(enc(t)) for t in texts)
        assert len(out.obs_spans[row]) == len(texts) - 1  # none after the last turn
        assert all(INFO_OPEN not in t and INFO_CLOSE not in t for t in texts)
        assert len(texts) <= max_turns + 1


# ------------------------------------------------------------------ the reference's bugs


def test_each_request_carries_its_own_rows_question_and_answer() -> None:
    seen: list[SimRequest] = []

    class Recording:
        k = 2

        def __call__(self, requests: list[SimRequest]) -> list[str]:
            seen.extend(requests)
            return ["Doc 1: a\nDoc 2: b"] * len(requests)

    # Only rows 1 and 3 search on turn 0, only row 2 on turn 1: sub-batches of the batch.
    policy = scripted(
        {
            0: ["<answer>a</answer>"],
            1: ["<search>query one</search>", "<answer>b</answer>"],
            2: ["thinking", "<search>query two</search>", "<answer>c</answer>"],
            3: ["<search>query three</search>", "<answer>d</answer>"],
        }
    )
    questions = [f"question {i}" for i in range(4)]
    golds = [["g0"], ["g1", "g1b"], "g2", "g3"]
    out = env(simulator=Recording()).rollout(
        policy, [f"Q{i}: x" for i in range(4)], questions, golds, 3
    )
    assert [(r.row, r.turn, r.query, r.question, r.answer, r.golds) for r in seen] == [
        (1, 0, "query one", "question 1", "g1", ("g1", "g1b")),
        (3, 0, "query three", "question 3", "g3", ("g3",)),
        (2, 1, "query two", "question 2", "g2", ("g2",)),
    ]
    assert out.requests == seen


def test_last_turn_makes_no_simulator_call() -> None:
    calls: list[list[int]] = []

    class Counting(CorpusSimulator):
        def __call__(self, requests: list[SimRequest]) -> list[str]:
            calls.append([r.turn for r in requests])
            return super().__call__(requests)

    policy = scripted({0: ["<search>capital of France</search>"], 1: ["<search>x</search>"]})
    out = env(simulator=Counting(FACTS, k=2), max_turns=2).rollout(
        policy, ["Q0: a", "Q1: b"], ["a", "b"], ["Paris", "Rome"], 1
    )
    assert calls == [[0, 0], [1, 1]]
    assert out.simulator_calls == 2
    assert out.actions == [["search"] * 3] * 2
    assert [q[-1] for q in out.queries] == ["capital of France", "x"]  # recorded, not sent
    assert [n[-1] for n in out.noisy] == [None, None]
    assert [len(s) for s in out.obs_spans] == [2, 2]
    assert out.responses[0].endswith("</information>\n\n<search>capital of France</search>")


# ------------------------------------------------------------------ noise


def test_noise_follows_the_schedule_and_the_draws() -> None:
    n, step, seed = 3000, 40, 11
    schedule = r1kit.NoiseSchedule(0.1, 0.6, 100, kind="linear")  # p(40) = 0.3
    e = SearchEnv(CorpusSimulator(FACTS, k=2), schedule, TOK, max_turns=2, topk=2, seed=seed)
    policy = scripted({i: ["<search>capital of France</search>"] for i in range(n)})
    keys = [f"uid-{i}" for i in range(n)]
    out = e.rollout(
        policy, [f"Q{i}: x" for i in range(n)], ["x"] * n, ["Paris"] * n, step, keys=keys
    )
    for turn in (0, 1):
        flags = [row[turn] for row in out.noisy]
        expected = schedule.draw_noisy(step, keys, turn, seed).tolist()
        assert flags == expected
        rate = sum(flags) / n
        assert abs(rate - 0.3) < 4 * (0.3 * 0.7 / n) ** 0.5
    # Noisy calls got noisy documents, useful calls the fact.
    for r, text in zip(out.requests, _docs_of(out), strict=True):
        assert ("Paris" in text) is (not r.noisy)


def _docs_of(out: r1kit.search.SearchRollout) -> list[str]:
    docs = []
    by_row: dict[int, int] = {}
    for r in out.requests:
        k = by_row.get(r.row, 0)
        by_row[r.row] = k + 1
        s, e = out.obs_spans[r.row][k]
        docs.append(TOK.decode(out.response_ids[r.row, s:e].tolist(), skip_special_tokens=False))
    return docs


def test_same_seed_same_rollout_other_seed_other_draws() -> None:
    n = 64
    policy_script = {
        i: ["<search>capital of Italy</search>", "<answer>Rome</answer>"] for i in range(n)
    }
    prompts, qs, golds = [f"Q{i}: x" for i in range(n)], ["x"] * n, ["Rome"] * n

    def run(seed: int) -> r1kit.search.SearchRollout:
        e = SearchEnv(
            CorpusSimulator(FACTS, k=2), r1kit.NoiseSchedule(0.5, 0.5, 10, kind="constant"),
            TOK, topk=2, seed=seed,
        )  # fmt: skip
        return e.rollout(scripted(policy_script), prompts, qs, golds, 3)

    a, b, c = run(0), run(0), run(1)
    assert a.noisy == b.noisy and a.responses == b.responses
    assert torch.equal(a.response_ids, b.response_ids) and torch.equal(a.loss_mask, b.loss_mask)
    assert a.noisy != c.noisy
    assert 0 < sum(row[0] for row in a.noisy) < n  # type: ignore[misc]


# ------------------------------------------------------------------ simulators


def req(query: str = "capital of France", noisy: bool = False, row: int = 4) -> SimRequest:
    return SimRequest(query, "What is the capital of France?", "Paris", noisy, row=row, turn=1)


def test_llm_simulator_prompts_and_parsing() -> None:
    prompts_seen: list[str] = []

    def generate(prompts: list[str]) -> list[str]:
        prompts_seen.extend(prompts)
        return [
            "Here you go:\nDoc 1: one.\nDoc 2: two\n  continued.\nDoc 3: three.",  # too many
            "Doc 1: a.\n\nDoc 2: b.",
        ]

    sim = LLMSimulator(generate, k=2)
    assert sim([req(), req(noisy=True)]) == [
        "Doc 1: one.\nDoc 2: two continued.",
        "Doc 1: a.\nDoc 2: b.",
    ]
    useful, noisy = prompts_seen
    assert "capital of France" in useful and "Paris" in useful and "What is the capital" in useful
    assert "capital of France" in noisy and "Paris" not in noisy and "What is" not in noisy
    assert "2 documents" in useful and "Doc 2:" in noisy


@pytest.mark.parametrize(
    ("output", "found"),
    [("Doc 1: only one.", 1), ("Paris is the capital. It is in France.", 0), ("Doc 1:\nDoc 2:", 0)],
)
def test_llm_simulator_too_few_or_badly_formatted(output: str, found: int) -> None:
    sim = LLMSimulator(lambda ps: ["Doc 1: x\nDoc 2: y", output], k=2)
    with pytest.raises(
        SimulatorError, match=rf"output 1 \(row 7, turn 1, query 'q'\).*found {found}"
    ) as e:
        sim([req(row=3), req("q", row=7)])
    assert (e.value.row, e.value.turn) == (7, 1)


def test_llm_simulator_generate_failures() -> None:
    with pytest.raises(SimulatorError, match="expected 2 outputs"):
        LLMSimulator(lambda ps: ["Doc 1: a\nDoc 2: b"], k=2)([req(), req()])
    with pytest.raises(SimulatorError, match=r"output 0 \(row 4.*expected a str"):
        LLMSimulator(lambda ps: [None], k=2)([req()])  # type: ignore[list-item]

    def boom(prompts: list[str]) -> list[str]:
        raise TimeoutError("endpoint down")

    with pytest.raises(SimulatorError, match=r"turn 1 for rows \[4\].*endpoint down") as e:
        LLMSimulator(boom, k=2)([req()])
    assert isinstance(e.value.__cause__, TimeoutError)
    with pytest.raises(r1kit.ArgumentError, match="useful_template"):
        LLMSimulator(boom, useful_template="no query field")
    with pytest.raises(r1kit.ArgumentError, match="noisy_template"):
        LLMSimulator(boom, noisy_template="{query} {unknown}")
    with pytest.raises(r1kit.ArgumentError, match="`k`"):
        LLMSimulator(boom, k=0)


def test_simulator_that_raises_names_row_and_turn() -> None:
    class Flaky:
        k = 2

        def __call__(self, requests: list[SimRequest]) -> list[str]:
            if any(r.query == "bad" for r in requests):
                raise KeyError("no index")
            return ["Doc 1: a\nDoc 2: b"] * len(requests)

    policy = scripted(
        {0: ["<search>fine</search>", "<answer>x</answer>"], 1: ["x", "<search>bad</search>"]}
    )
    with pytest.raises(SimulatorError, match=r"turn 1 for rows \[1\] \(row 1\).*no index") as e:
        env(simulator=Flaky()).rollout(policy, ["Q0: a", "Q1: b"], ["a", "b"], ["x", "y"], 1)
    assert (e.value.row, e.value.turn) == (1, 1)

    class Short:
        k = 2

        def __call__(self, requests: list[SimRequest]) -> list[str]:
            return ["Doc 1: a\nDoc 2: b"][: len(requests) - 1]

    policy = scripted({0: ["<search>q</search>"], 1: ["<search>q</search>"]})
    with pytest.raises(
        SimulatorError, match=r"turn 0: expected 2 documents texts \(rows \[0, 1\]\)"
    ):
        env(simulator=Short()).rollout(policy, ["Q0: a", "Q1: b"], ["a", "b"], ["x", "y"], 1)


def test_env_keeps_topk_documents_and_refuses_fewer() -> None:
    class Fixed:
        def __init__(self, text: str) -> None:
            self.text = text

        def __call__(self, requests: list[SimRequest]) -> list[str]:
            return [self.text] * len(requests)

    def run(text: str) -> r1kit.search.SearchRollout:
        policy = scripted({0: ["<search>q</search>", "<answer>a</answer>"]})
        return env(simulator=Fixed(text)).rollout(policy, ["Q0: x"], ["x"], ["a"], 1)

    three = format_documents(["a.", "b.", "c."])
    assert obs(format_documents(["a.", "b."])) in run(three).responses[0]
    free = "a retriever's own format"
    assert obs(free) in run(free).responses[0]
    with pytest.raises(SimulatorError, match=r"expected 2 documents for row 0, turn 0.*found 1"):
        run("Doc 1: a.")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_observation_mask_on_cuda() -> None:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 12, (33, 700), generator=g)
    am = (torch.rand(33, 700, generator=g) > 0.05).long()
    cpu = observation_mask(ids, 1, 2, am, before=[9], after=[9, 4])
    cuda = observation_mask(ids.cuda(), 1, 2, am.cuda(), before=[9], after=[9, 4])
    assert cuda.device.type == "cuda" and cuda.dtype == torch.int64
    assert torch.equal(cuda.cpu(), cpu)


def test_llm_simulator_inside_a_rollout_names_the_row() -> None:
    def generate(prompts: list[str]) -> list[str]:
        return ["Doc 1: fine\nDoc 2: fine" if "good" in p else "nothing useful" for p in prompts]

    policy = scripted({0: ["<search>good</search>"], 1: ["<search>broken</search>"]})
    with pytest.raises(SimulatorError, match=r"row 1, turn 0, query 'broken'") as e:
        env(simulator=LLMSimulator(generate, k=2)).rollout(
            policy, ["Q0: a", "Q1: b"], ["a", "b"], ["x", "y"], 1
        )
    assert (e.value.row, e.value.turn) == (1, 0)


def test_llm_simulator_from_hf_decodes_only_new_tokens() -> None:
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=byte_tokenizer(), pad_token="<think>")

    class FakeModel:
        device = torch.device("cpu")

        def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kw: object):
            assert kw["max_new_tokens"] == 32 and kw["do_sample"] is False
            # Left padding: every row's last prompt token sits in the last column.
            assert attention_mask[:, -1].all()
            reply = torch.tensor(enc("Doc 1: x.\nDoc 2: y."))
            return torch.cat([input_ids, reply.expand(input_ids.shape[0], -1)], dim=1)

    sim = LLMSimulator.from_hf(FakeModel(), hf, k=2, max_new_tokens=32)
    assert (
        sim([req(), req("longer query about the capital", noisy=True)])
        == ["Doc 1: x.\nDoc 2: y."] * 2
    )
    assert hf.padding_side == "right"  # restored
    # The adapter also takes transformers tokenizers in the env.
    out = SearchEnv(sim, r1kit.NoiseSchedule(0.0, 0.0, 1), hf, topk=2).rollout(
        scripted({0: ["<search>q</search>", "<answer>y</answer>"]}), ["Q0: a"], ["a"], ["y"], 0
    )
    assert out.rewards.tolist() == [1.0] and out.responses[0].count("Doc 2: y.") == 1


def test_corpus_simulator_documents() -> None:
    sim = CorpusSimulator(FACTS, k=3, seed=5)
    useful = sim([req()])[0]
    assert useful == format_documents(
        [
            "The capital of France is Paris.",
            "Paris is the capital of France.",
            "According to reference works, France's capital is Paris.",
        ]
    )
    noisy = parse_documents(sim([req(noisy=True)])[0])
    assert len(noisy) == 3 and len(set(noisy)) == 3
    assert all("Paris" not in d and "capital of France" not in d for d in noisy)
    # Deterministic in (seed, request), whatever else is in the batch; the seed matters.
    alone = sim([req(noisy=True)])[0]
    assert sim([req("capital of Italy", True), req(noisy=True)])[1] == alone
    others = {CorpusSimulator(FACTS, k=3, seed=s)([req(noisy=True)])[0] for s in range(8)}
    assert len(others) > 1
    # The question is the fallback when the query names no fact; unknown facts say so.
    assert "Tokyo" in sim([SimRequest("where?", "capital of Japan?", "Tokyo", False)])[0]
    assert "no source" in sim([SimRequest("weather", "weather?", "sunny", False)])[0]
    # Filler when there are not enough other facts.
    tiny = CorpusSimulator([("France", "capital", "Paris")], k=2)
    assert tiny([req(noisy=True)])[0] == format_documents(
        [f"Record {i}: this source has no entry that matches the query." for i in (1, 2)]
    )
    with pytest.raises(r1kit.ArgumentError, match=r"facts\[1\]"):
        CorpusSimulator([("a", "b", "c"), ("a", "b")])  # type: ignore[list-item]


@settings(max_examples=60, deadline=None)
@given(
    facts=st.lists(
        st.tuples(*[st.sampled_from(w) for w in (["France", "Italy", "Spain", "Peru"],
                                                 ["capital", "river", "currency"],
                                                 ["Paris", "Rome", "Lima", "euro", "Seine"])]),
        min_size=1, max_size=12,
    ),
    ask=st.integers(0, 11), seed=st.integers(0, 2**32),
)  # fmt: skip
def test_noisy_corpus_documents_never_contain_the_answer(
    facts: list[tuple[str, str, str]], ask: int, seed: int
) -> None:
    entity, relation, value = facts[ask % len(facts)]
    sim = CorpusSimulator(facts, k=4, seed=seed)
    request = SimRequest(f"{relation} of {entity}", "?", value, True, golds=(value,))
    docs = parse_documents(sim([request])[0])
    assert len(docs) == 4
    assert all(value.lower() not in d.lower() for d in docs)


# ------------------------------------------------------------------ observation budget


def test_long_observation_is_cut_with_the_closing_tag_kept(tensor_path: str) -> None:
    long_docs = format_documents(["word " * 40, "more " * 40])

    class Verbose:
        k = 2

        def __call__(self, requests: list[SimRequest]) -> list[str]:
            return [long_docs] * len(requests)

    e = env(simulator=Verbose(), max_obs_tokens=30)
    out = e.rollout(
        scripted({0: ["<search>q</search>", "<answer>a</answer>"]}), ["Q0: x"], ["x"], ["a"], 1
    )
    ((start, end),) = out.obs_spans[0]
    assert end - start == 30
    block = out.response_ids[0, start:end].tolist()
    budget = 30 - 6  # "\n\n" twice (2 tokens each) and the two tags
    nl = enc("\n\n")
    assert block == [*nl, e.info_open_id, *enc(long_docs)[:budget], e.info_close_id, *nl]
    assert out.responses[0] == "<search>q</search>" + obs(long_docs[:budget]) + "<answer>a</answer>"
    assert torch.equal(e.observation_mask(out.response_ids, out.response_mask), out.loss_mask)
    with pytest.raises(r1kit.ArgumentError, match="max_obs_tokens"):
        env(max_obs_tokens=6)


# ------------------------------------------------------------------ bad input


def test_bad_rollout_inputs() -> None:
    e, policy = env(), scripted({0: ["<answer>a</answer>"]})
    with pytest.raises(r1kit.ShapeError, match=r"`questions`.*1.*2"):
        e.rollout(policy, ["Q0: a"], ["a", "b"], ["a"], 1)
    with pytest.raises(r1kit.ShapeError, match="`golds`"):
        e.rollout(policy, ["Q0: a"], ["a"], [], 1)
    with pytest.raises(r1kit.ShapeError, match="`keys`"):
        e.rollout(policy, ["Q0: a"], ["a"], ["a"], 1, keys=[1, 2])
    with pytest.raises(r1kit.ArgumentTypeError, match="keys"):
        e.rollout(lambda c, s: pytest.fail("generated"), ["Q0: a"], ["a"], ["a"], 1, keys=[1.5])
    with pytest.raises(r1kit.ArgumentTypeError, match=r"`prompts\[0\]`"):
        e.rollout(policy, [3], ["a"], ["a"], 1)  # type: ignore[list-item]
    with pytest.raises(r1kit.ArgumentTypeError, match=r"`golds\[0\]`"):
        e.rollout(policy, ["Q0: a"], ["a"], [[]], 1)
    with pytest.raises(r1kit.ArgumentError, match="`step`"):
        e.rollout(policy, ["Q0: a"], ["a"], ["a"], -1)
    with pytest.raises(r1kit.ArgumentError, match="`generate_fn`: expected 1 texts on turn 0"):
        e.rollout(lambda c, s: [], ["Q0: a"], ["a"], ["a"], 1)
    with pytest.raises(r1kit.ArgumentTypeError, match="row 0 on turn 0"):
        e.rollout(lambda c, s: [None], ["Q0: a"], ["a"], ["a"], 1)  # type: ignore[list-item]
    empty = e.rollout(policy, [], [], [], 1)
    assert empty.response_ids.shape == (0, 0) and empty.rewards.shape == (0,)


def test_bad_env_arguments() -> None:
    sim, sched = CorpusSimulator(FACTS, k=2), r1kit.NoiseSchedule(0.0, 0.5, 10)
    with pytest.raises(r1kit.ArgumentError, match="`max_turns`: expected at least 1"):
        SearchEnv(sim, sched, TOK, max_turns=0, topk=2)
    with pytest.raises(r1kit.ArgumentError, match="`topk`: expected at most the simulator's k = 2"):
        SearchEnv(sim, sched, TOK, topk=3)
    assert SearchEnv(sim, sched, TOK).topk == 2
    plain = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    with pytest.raises(r1kit.ArgumentError, match=r"`tokenizer`.*'<information>' to be one token"):
        SearchEnv(sim, sched, plain, topk=2)
    with pytest.raises(r1kit.ArgumentTypeError, match="`tokenizer`"):
        SearchEnv(sim, sched, object(), topk=2)
    with pytest.raises(r1kit.ArgumentTypeError, match="`schedule`"):
        SearchEnv(sim, 0.5, TOK, topk=2)  # type: ignore[arg-type]
    with pytest.raises(r1kit.ArgumentTypeError, match="`simulator`"):
        SearchEnv("sim", sched, TOK, topk=2)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the mask from ids


def test_observation_mask_hand_worked(tensor_path: str) -> None:
    # 1 = <information>, 2 = </information>, 9 = the newline id around observations.
    ids = torch.tensor([[5, 9, 1, 7, 7, 2, 9, 6, 2, 0], [9, 1, 3, 1, 2, 4, 1, 8, 8, 8]])
    am = torch.tensor([[1] * 9 + [0], [1] * 10])
    assert observation_mask(ids, 1, 2, am, before=[9], after=[9]).tolist() == [
        [1, 0, 0, 0, 0, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 1, 0, 0, 0, 0],
    ]
    assert observation_mask(ids, 1, 2).tolist() == [
        [1, 1, 0, 0, 0, 0, 1, 1, 1, 1],
        [1, 0, 0, 0, 0, 1, 0, 0, 0, 0],
    ]
    assert observation_mask(ids.int(), 1, 2, am.bool()).dtype == torch.bool
    assert observation_mask(ids, 1, 2, am.float()).dtype == torch.float32


def python_mask(
    ids: list[int], valid: list[bool], before: list[int], after: list[int]
) -> list[int]:
    """The rule of the docs, written independently: find observations, then their frames."""
    out = [1 if v else 0 for v in valid]
    pos = [t for t in range(len(ids)) if valid[t]]  # padding is skipped by the scan
    k = 0
    while k < len(pos):
        if ids[pos[k]] != 1:
            k += 1
            continue
        j = k
        while j < len(pos) and not (j > k and ids[pos[j]] == 2):
            j += 1
        end = min(j, len(pos) - 1)
        for q in range(k, end + 1):
            out[pos[q]] = 0
        t0, t1 = pos[k], pos[end]
        b = len(before)
        if b and t0 >= b and ids[t0 - b : t0] == before and all(valid[t0 - b : t0]):
            out[t0 - b : t0] = [0] * b
        a = len(after)
        if (
            j < len(pos)
            and a
            and ids[t1 + 1 : t1 + 1 + a] == after
            and all(valid[t1 + 1 : t1 + 1 + a])
        ):
            out[t1 + 1 : t1 + 1 + a] = [0] * a
        k = end + 1
    return out


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.sampled_from([0, 1, 2, 9, 9, 4]), min_size=8, max_size=8),
        min_size=1, max_size=4,
    ),
    valid=st.lists(st.booleans(), min_size=32, max_size=32),
    before=st.lists(st.sampled_from([9, 4]), max_size=2),
    after=st.lists(st.sampled_from([9, 4]), max_size=2),
)  # fmt: skip
def test_observation_mask_matches_a_python_reference(
    rows: list[list[int]], valid: list[bool], before: list[int], after: list[int]
) -> None:
    ids = torch.tensor(rows)
    am = torch.tensor(valid[: ids.numel()]).reshape(ids.shape)
    expected = [python_mask(r, m, before, after) for r, m in zip(rows, am.tolist(), strict=True)]
    for path in ("cpu", "device"):
        got = observation_mask(ids, 1, 2, am.long(), before=before, after=after, path=path)  # type: ignore[arg-type]
        assert got.tolist() == expected


def test_observation_mask_bad_input() -> None:
    ids = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(r1kit.ShapeError, match="`input_ids`"):
        observation_mask(ids[0], 1, 2)
    with pytest.raises(r1kit.DtypeError, match="`input_ids`"):
        observation_mask(ids.float(), 1, 2)
    with pytest.raises(r1kit.ShapeError, match="`attention_mask`"):
        observation_mask(ids, 1, 2, torch.ones(2, 4))
    with pytest.raises(r1kit.ArgumentError, match="`info_close`"):
        observation_mask(ids, 1, 1)
    with pytest.raises(r1kit.ArgumentError, match="`before`"):
        observation_mask(ids, 1, 2, before=[9, 1])
    with pytest.raises(r1kit.ArgumentTypeError, match="`input_ids`"):
        observation_mask([[1, 2]], 1, 2)  # type: ignore[arg-type]
    with pytest.raises(r1kit.ArgumentTypeError, match=r"`after\[0\]`"):
        observation_mask(ids, 1, 2, after=["x"])  # type: ignore[list-item]
    with pytest.raises(r1kit.ArgumentError, match=r"`spans\[0\]`"):
        spans_mask([3], 3, [(0, 2, 4)])
    with pytest.raises(r1kit.ArgumentError, match=r"`lengths\[0\]`"):
        spans_mask([4], 3, [])


def test_observation_mask_threads_give_the_same_bits(restore_threads: None) -> None:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 12, (64, 513), generator=g)
    masks = []
    for n in (1, 2):
        r1kit.set_num_threads(n)
        masks.append(observation_mask(ids, 1, 2, before=[9], after=[9, 4]))
    assert torch.equal(masks[0], masks[1])


# ------------------------------------------------------------------ the example


def test_search_rollout_example_runs() -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "search_rollout.py"
    result = subprocess.run(
        [sys.executable, str(script), "--batch", "64", "--steps", "1", "203"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "<answer>Paris</answer>" in result.stdout
    assert "step   1: p(noisy) = 0.001, noisy calls 0/64" in result.stdout
    assert result.stdout.count("masks agree") == 2
