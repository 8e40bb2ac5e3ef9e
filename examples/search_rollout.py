"""ZeroSearch's simulated search: multi-turn rollouts under the noise curriculum, with no model.

Run:  python examples/search_rollout.py [--batch 256] [--steps 1 100 203]

A scripted policy (search, then answer with what the documents said) runs against
``CorpusSimulator`` over a small fact table. The script prints one transcript, checks that the
observation mask from token ids equals the mask from the spans the rollout recorded, and shows
the share of noisy search calls and the mean F1 reward rising and falling with the curriculum.

To use a simulation LLM instead, swap in ``LLMSimulator`` with any ``list[str] -> list[str]``
generator: ``LLMSimulator.from_hf(model, tokenizer)`` for a local Hugging Face model, or a
function that posts the prompts to an OpenAI-compatible server.
"""

from __future__ import annotations

import argparse
import re

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

import r1kit
from r1kit.search import TAGS, CorpusSimulator, SearchEnv, parse_documents

FACTS = [
    ("France", "capital", "Paris"),
    ("Italy", "capital", "Rome"),
    ("Japan", "capital", "Tokyo"),
    ("Peru", "capital", "Lima"),
    ("Kenya", "capital", "Nairobi"),
    ("Hamlet", "author", "William Shakespeare"),
    ("Faust", "author", "Johann Wolfgang von Goethe"),
    ("Mars", "moons", "Phobos and Deimos"),
    ("Python", "creator", "Guido van Rossum"),
    ("Linux", "creator", "Linus Torvalds"),
]


def byte_tokenizer() -> Tokenizer:
    """One token per byte, plus the protocol's tags as single tokens (built in code)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE({c: i for i, c in enumerate(alphabet)}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(TAGS))
    return tok


def policy(contexts: list[str], stop: list[str]) -> list[str]:
    """Searches for the asked relation, then answers with the first document's last words."""
    out = []
    for context in contexts:
        asked = re.search(r"Question: (.*)\n", context)
        assert asked is not None
        docs = re.findall(r"<information>(.*?)</information>", context, flags=re.S)
        if not docs:
            out.append(f"<think>I need to look it up.</think><search>{asked.group(1)}</search>")
            continue
        first = parse_documents(docs[-1])[0].rstrip(".")
        guess = first.split(" is ", 1)[-1] if " is " in first else first
        out.append(f"<think>The documents say {guess}.</think><answer>{guess}</answer>")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 100, 203])
    args = parser.parse_args()

    schedule = r1kit.NoiseSchedule(start=0.0, end=0.5, total_steps=203)
    env = SearchEnv(CorpusSimulator(FACTS, k=3, seed=0), schedule, byte_tokenizer(), max_turns=2)
    rows = [FACTS[i % len(FACTS)] for i in range(args.batch)]
    questions = [f"{relation} of {entity}" for entity, relation, _ in rows]
    prompts = [f"Answer the question, searching if needed.\nQuestion: {q}\n" for q in questions]
    golds = [value for _, _, value in rows]

    for n, step in enumerate(args.steps):
        out = env.rollout(
            policy, prompts, questions, golds, step, keys=[f"uid-{i}" for i in range(args.batch)]
        )
        mask = env.observation_mask(out.response_ids, out.response_mask)
        assert torch.equal(mask, out.loss_mask), "mask from ids != mask from spans"
        calls = [flag for row in out.noisy for flag in row if flag is not None]
        if n == 0:
            print("transcript of row 0:")
            print(prompts[0], end="")
            print(out.responses[0])
            print(f"  actions {out.actions[0]}, answer {out.answers[0]!r}, F1 {out.rewards[0]:.2f}")
            policy_tokens = int(out.loss_mask[0].sum())
            print(
                f"  {int(out.response_mask[0].sum())} response tokens, {policy_tokens} in the "
                "loss (the observations are masked out)\n"
            )
        print(
            f"step {step:>3}: p(noisy) = {schedule.probability(step):.3f}, noisy calls "
            f"{sum(calls)}/{len(calls)} = {sum(calls) / len(calls):.3f}, "
            f"mean F1 = {out.rewards.mean():.3f}, masks agree"
        )


if __name__ == "__main__":
    main()
