"""Simulated search: the observation loss mask and the rollout loop's own overhead.

The mask is timed on ZeroSearch's batch (320 trajectories x 4096 response tokens, two searches
and a final answer per row) against

- a Python per-token loop of the same rule, and
- the reference's approach, reimplemented from its description: while the rollout grows the
  response turn by turn (concatenate, then a stable argsort of the padding and a gather to push
  padding right), it grows a twin in which every observation token is replaced by the pad id;
  the mask is ``twin != pad_id`` at the end. Only the twin's work is timed (its concatenations,
  gathers and the comparison): the sort indices and the ids themselves are needed by both
  approaches and are computed outside the timing, which favours the reference.

The rollout case runs :meth:`r1kit.search.SearchEnv.rollout` on 320 trajectories with a
scripted policy and :class:`r1kit.search.CorpusSimulator`; the scripted policy alone is timed
as well, so the difference is the time r1kit spends outside ``generate``.
"""

from __future__ import annotations

import re

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from benches.harness import Case, nbytes
from r1kit import NoiseSchedule
from r1kit.search import TAGS, CorpusSimulator, SearchEnv, observation_mask

PAD, OPEN, CLOSE, NL = 0, 1, 2, 3
N, WIDTH = 320, 4096


def _trajectories(seed: int = 0) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
    """Per turn, each row's policy piece and observation (None on the final turn)."""
    g = torch.Generator().manual_seed(seed)

    def rand(n: int) -> torch.Tensor:
        return torch.randint(10, 150_000, (n,), generator=g)

    responses: list[list[torch.Tensor]] = [[], [], []]
    observations: list[list[torch.Tensor]] = [[], []]
    for _ in range(N):
        for turn in range(3):
            responses[turn].append(rand(int(torch.randint(40, 400, (1,), generator=g))))
            if turn < 2:
                docs = rand(int(torch.randint(300, 900, (1,), generator=g)))
                block = torch.cat([torch.tensor([NL, OPEN]), docs, torch.tensor([CLOSE, NL])])
                observations[turn].append(block)
    return responses, observations


def _right_pad(rows: list[torch.Tensor]) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), PAD, dtype=torch.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _push_padding_right(t: torch.Tensor) -> torch.Tensor:
    """The reference's padding step: stable argsort of the pad mask, as gather indices."""
    return (t == PAD).to(torch.int64).argsort(dim=1, stable=True)


def cases() -> list[Case]:
    responses, observations = _trajectories()
    resp_t = [_right_pad(r) for r in responses]
    obs_t = [_right_pad(o) for o in observations]

    # The ids as the rollout grows them, with the sort indices and widths of every turn.
    ids = torch.zeros((N, 0), dtype=torch.int64)
    steps: list[tuple[torch.Tensor, int]] = []
    for turn in range(3):
        parts = [ids, resp_t[turn]] + ([obs_t[turn]] if turn < 2 else [])
        cat = torch.cat(parts, dim=1)
        idx = _push_padding_right(cat)
        ids = cat.gather(1, idx)
        width = int((ids != PAD).sum(1).max())
        ids = ids[:, :width]
        steps.append((idx, width))
    assert ids.shape[1] <= WIDTH
    ids = torch.cat([ids, torch.full((N, WIDTH - ids.shape[1]), PAD)], dim=1)
    attention = (ids != PAD).to(torch.int64)

    def reference_twin() -> torch.Tensor:
        twin = torch.zeros((N, 0), dtype=torch.int64)
        for turn, (idx, width) in enumerate(steps):
            parts = [twin, resp_t[turn]]
            if turn < 2:
                parts.append(torch.full_like(obs_t[turn], PAD))
            twin = torch.cat(parts, dim=1).gather(1, idx)[:, :width]
        return twin != PAD

    def ours() -> torch.Tensor:
        return observation_mask(ids, OPEN, CLOSE, attention, before=[NL], after=[NL])

    id_list = ids.tolist()
    valid_list = attention.tolist()

    def python_loop() -> torch.Tensor:
        out = []
        for row, valid in zip(id_list, valid_list, strict=True):
            m = [0] * len(row)
            inside, after_left = False, 0
            for t, tok in enumerate(row):
                if not valid[t]:
                    continue
                if inside:
                    if tok == CLOSE:
                        inside = False
                        if row[t + 1 : t + 2] == [NL] and valid[t + 1]:
                            after_left = 1
                elif tok == OPEN:
                    inside = True
                    if t >= 1 and row[t - 1] == NL and valid[t - 1]:
                        m[t - 1] = 0
                elif after_left:
                    after_left -= 1
                else:
                    m[t] = 1
            out.append(m)
        return torch.tensor(out)

    def check() -> None:
        expected = ours()
        twin = reference_twin()
        assert torch.equal(expected[:, : twin.shape[1]].bool(), twin)
        assert not expected[:, twin.shape[1] :].any()
        assert torch.equal(python_loop(), expected)

    mask_case = Case(
        name=f"observation_mask {N}x{WIDTH} ids (2 searches + answer per row)",
        r1kit=ours,
        baselines={
            "Python per-token loop": python_loop,
            "reference: pad-replaced twin + compare": reference_twin,
        },
        check=check,
        inputs=[ids, attention],
        traffic_bytes=3 * nbytes(ids),  # read ids and the attention mask; write the int64 mask
    )
    return [mask_case, _rollout_case()]


def _byte_tokenizer() -> Tokenizer:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE({c: i for i, c in enumerate(alphabet)}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(TAGS))
    return tok


def _rollout_case() -> Case:
    countries = [f"Country{i}" for i in range(200)]
    facts = [(c, "capital", f"City{i}") for i, c in enumerate(countries)]
    facts += [(c, "currency", f"Coin{i}") for i, c in enumerate(countries)]
    sim = CorpusSimulator(facts, k=5)
    env = SearchEnv(sim, NoiseSchedule(0.0, 0.5, 200), _byte_tokenizer(), max_turns=2, seed=0)
    prompts = [f"Q{i}: What is the capital of {countries[i % 200]}?" for i in range(N)]
    questions = [p.split(": ", 1)[1] for p in prompts]
    golds = [f"City{i % 200}" for i in range(N)]
    thought = "<think>" + "I should look this up before answering. " * 6 + "</think>"
    row_of = re.compile(r"Q(\d+):")

    def policy(contexts: list[str], stop: list[str]) -> list[str]:
        out = []
        for c in contexts:
            i = int(row_of.match(c).group(1))  # type: ignore[union-attr]
            searches = c.count("<information>")
            if searches < 2 and i % 3 != 0:
                out.append(
                    f"{thought}<search>capital of {countries[(i + searches) % 200]}</search>"
                )
            else:
                out.append(f"{thought}<answer>City{i % 200}</answer>")
        return out

    # The same policy calls on contexts of the same sizes, without the environment.
    contexts_by_turn = []
    probe = env.rollout(policy, prompts, questions, golds, step=100)
    for turn in range(3):
        ctx = []
        for i in range(N):
            if len(probe.policy_texts[i]) > turn:
                text = "".join(probe.policy_texts[i][:turn])
                ctx.append(prompts[i] + text + "x" * (len(probe.responses[i]) - len(text)))
        contexts_by_turn.append(ctx)

    def policy_alone() -> None:
        for ctx in contexts_by_turn:
            policy(ctx, ["</search>", "</answer>"])

    total_tokens = int(probe.response_mask.sum())
    return Case(
        name=(
            f"SearchEnv.rollout {N} trajectories, CorpusSimulator, scripted policy "
            f"({total_tokens // N} response tokens/row)"
        ),
        r1kit=lambda: env.rollout(policy, prompts, questions, golds, step=100),
        baselines={"scripted policy alone (subtract)": policy_alone},
        notes="r1kit time minus the policy's time = time outside generate",
    )
