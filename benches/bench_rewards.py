"""Rewards: r1kit against the per-sample Python loops used today.

- QA: a Python implementation of the same spec written the way the references (ZeroSearch,
  Search-R1) do it: regex extraction, SQuAD normalization, Counter F1, one response at a time.
- From ids: HF ``batch_decode`` (transformers fast tokenizer) followed by that Python scorer.
- Math: verl's ``math_reward.compute_score`` and verl's math-verify ``compute_score`` per response.

``python benches/bench_rewards.py --corpus`` prints the accuracy of r1kit, r1kit with the
math-verify fallback, math-verify and verl on the generated math corpus of tests/math_corpus.py.
"""

from __future__ import annotations

import random
import re
import string
import sys
import warnings
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from benches.harness import Case  # noqa: E402
from math_corpus import corpus  # noqa: E402
from r1kit import rewards  # noqa: E402

# --- the Python reference scorer, as the references write it ---------------------------------


def py_normalize_answer(s: str) -> str:
    def remove_articles(text: str) -> str:
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text: str) -> str:
        return " ".join(text.split())

    def remove_punc(text: str) -> str:
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def py_f1(prediction: str, gold: str) -> float:
    p = py_normalize_answer(prediction).split()
    g = py_normalize_answer(gold).split()
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = 1.0 * same / len(p), 1.0 * same / len(g)
    return (2 * precision * recall) / (precision + recall)


def py_extract(response: str) -> str | None:
    matches = list(re.finditer(r"<answer>(.*?)</answer>", response, re.DOTALL))
    return matches[-1].group(1).strip() if matches else None


def py_qa_scores(responses: list[str], golds: list[list[str]]) -> torch.Tensor:
    out = []
    for response, gs in zip(responses, golds, strict=True):
        answer = py_extract(response)
        if answer is None:
            out.append(0.0)
            continue
        out.append(max((py_f1(answer, g) for g in gs if py_normalize_answer(g)), default=0.0))
    return torch.tensor(out, dtype=torch.float32)


# --- data ------------------------------------------------------------------------------------

WORDS = (
    "the of and to in is was for on that with as by at from his her an it be are were which "
    "this first city river king war world year state north south new old great history time "
    "people album film song band party team season game player club league cup church school "
    "university college island lake mountain village county district capital president minister"
).split()


def qa_batch(n: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    rng = random.Random(seed)
    names = [f"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()}son" for _ in range(500)]
    responses, golds = [], []
    for _ in range(n):
        think = " ".join(rng.choice(WORDS) for _ in range(180))
        gold = rng.choice(names)
        answer = gold if rng.random() < 0.5 else f"the {rng.choice(names)}, {rng.choice(WORDS)}"
        responses.append(
            f"<think>{think}</think>\n<search>{gold.split()[0]}</search>\n"
            f"<information>{' '.join(rng.choice(WORDS) for _ in range(15))}</information>\n"
            f"<answer> {answer} </answer>"
        )
        golds.append([gold, gold.split()[-1], f"{gold} Jr."])
    return responses, golds


def math_batch(n: int, seed: int = 0, boxed_only: bool = False) -> tuple[list[str], list[str]]:
    """Corpus pairs behind ~150 words of reasoning; ``boxed_only``: only the \\boxed formats
    (the only ones verl's math_reward reads, so both sides do the full comparison)."""
    rng = random.Random(seed)
    pairs = corpus(seed=seed)
    if boxed_only:
        pairs = [p for p in pairs if p.kind.split("/")[1].startswith("boxed")]
    rng.shuffle(pairs)
    filler = " ".join(rng.choice(WORDS) for _ in range(150))
    chosen = [pairs[i % len(pairs)] for i in range(n)]
    return [f"{filler}\n{p.response}" for p in chosen], [p.gold for p in chosen]


def hf_tokenizer() -> object:
    import tokenizers
    import transformers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=["<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    responses, _ = qa_batch(300, seed=7)
    tok.train_from_iterator(responses, trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", clean_up_tokenization_spaces=False
    )


def cases() -> list[Case]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from verl.utils.reward_score import math_reward
        from verl.utils.reward_score import math_verify as verl_math_verify

    n = 10_000
    responses, golds = qa_batch(n)

    # Token ids [N, 512] (+ mask) of the same responses.
    hf = hf_tokenizer()
    enc = hf(responses, padding="max_length", truncation=True, max_length=512, return_tensors="pt")  # type: ignore[operator]
    ids, mask = enc["input_ids"], enc["attention_mask"]
    decoder = rewards.TokenDecoder.from_hf(hf)
    decoded = hf.batch_decode(ids, skip_special_tokens=True)  # type: ignore[attr-defined]

    m_responses, m_golds = math_batch(n)
    b_responses, b_golds = math_batch(n, boxed_only=True)
    k = 1000
    mk_responses, mk_golds = m_responses[:k], m_golds[:k]

    def check_qa() -> None:
        torch.testing.assert_close(
            rewards.qa_scores(responses, golds), py_qa_scores(responses, golds)
        )

    def check_ids() -> None:
        ours = rewards.qa_scores(None, golds, ids=ids, attention_mask=mask, decoder=decoder)
        torch.testing.assert_close(ours, py_qa_scores(decoded, golds))

    return [
        Case(
            name=f"qa_scores F1, {n} responses of ~200 words, 3 golds each",
            r1kit=lambda: rewards.qa_scores(responses, golds),
            baselines={
                "python (regex + SQuAD normalize + Counter F1)": lambda: py_qa_scores(
                    responses, golds
                )
            },
            check=check_qa,
        ),
        Case(
            name=f"qa_scores F1 from ids [{n}, 512] + mask",
            r1kit=lambda: rewards.qa_scores(
                None, golds, ids=ids, attention_mask=mask, decoder=decoder
            ),
            baselines={
                "HF batch_decode + python scorer": lambda: py_qa_scores(
                    hf.batch_decode(ids, skip_special_tokens=True),  # type: ignore[attr-defined]
                    golds,
                )
            },
            check=check_ids,
        ),
        Case(
            name=f"math_scores, {n} responses, all answer formats",
            r1kit=lambda: rewards.math_scores(m_responses, m_golds),
            baselines={
                "verl math_reward.compute_score (loop)": lambda: [
                    math_reward.compute_score(r, g)
                    for r, g in zip(m_responses, m_golds, strict=True)
                ]
            },
        ),
        Case(
            name=f"math_scores, {n} responses, \\boxed formats only",
            r1kit=lambda: rewards.math_scores(b_responses, b_golds),
            baselines={
                "verl math_reward.compute_score (loop)": lambda: [
                    math_reward.compute_score(r, g)
                    for r, g in zip(b_responses, b_golds, strict=True)
                ]
            },
        ),
        Case(
            name=f"math_scores, {k} responses (math-verify is slow)",
            r1kit=lambda: rewards.math_scores(mk_responses, mk_golds),
            baselines={
                "verl math_verify.compute_score (loop)": lambda: [
                    verl_math_verify.compute_score(r, g)
                    for r, g in zip(mk_responses, mk_golds, strict=True)
                ]
            },
        ),
    ]


def corpus_report() -> None:
    """Accuracy of each scorer on the generated math corpus (truth known by construction)."""
    import time

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from verl.utils.reward_score import math_reward
        from verl.utils.reward_score import math_verify as verl_math_verify

    pairs = corpus(seed=0)
    responses, golds = [p.response for p in pairs], [p.gold for p in pairs]
    truth = [p.truth for p in pairs]

    def report(name: str, scores: list[float], seconds: float) -> None:
        tp = sum(s > 0 and t for s, t in zip(scores, truth, strict=True))
        fp = sum(s > 0 and not t for s, t in zip(scores, truth, strict=True))
        pos = sum(truth)
        print(
            f"{name:<34} recall {tp}/{pos} = {tp / pos:.4f}, false positives {fp}/"
            f"{len(truth) - pos}, {seconds:.2f} s"
        )

    print(
        f"corpus: {len(pairs)} pairs, {sum(truth)} equivalent,"
        f" {len(pairs) - sum(truth)} near misses"
    )
    for name, fn in [
        ("r1kit math_scores", lambda: rewards.math_scores(responses, golds).tolist()),
        (
            "r1kit math_scores + math_verify",
            lambda: rewards.math_scores(responses, golds, fallback="math_verify").tolist(),
        ),
        (
            "verl math_reward.compute_score",
            lambda: [
                math_reward.compute_score(r, g) for r, g in zip(responses, golds, strict=True)
            ],
        ),
        (
            "verl math_verify.compute_score",
            lambda: [
                verl_math_verify.compute_score(r, g) for r, g in zip(responses, golds, strict=True)
            ],
        ),
    ]:
        t0 = time.perf_counter()
        scores = fn()
        report(name, scores, time.perf_counter() - t0)
    misses: Counter[str] = Counter()
    mv = [verl_math_verify.compute_score(r, g) for r, g in zip(responses, golds, strict=True)]
    for p, s in zip(pairs, mv, strict=True):
        if p.truth and s == 0:
            misses[p.kind.split("/")[1]] += 1
        if not p.truth and s > 0:
            print(f"math-verify false positive: gold {p.gold!r}, response ...{p.response[-40:]!r}")
    print("math-verify misses by format:", dict(misses))


if __name__ == "__main__":
    if "--corpus" in sys.argv:
        corpus_report()
