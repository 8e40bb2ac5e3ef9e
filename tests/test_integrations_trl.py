"""r1kit inside the real TRL 1.16 GRPOTrainer: reward functions, structured log-probs, estimators.

Everything is built in the test (a word-level tokenizer with the tags as special tokens, a tiny
random Qwen2): no download.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from r1kit import rewards
from r1kit.errors import ArgumentError
from r1kit.structure import ParallelTags, parse_parallel

trl = pytest.importorskip("trl")
transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")

from r1kit.integrations import trl as r1kit_trl  # noqa: E402

TAGS = ["<Parallel>", "</Parallel>", "<Path>", "</Path>", "<Summary>", "</Summary>"]
WORDS = ["<answer>", "</answer>", "paris", "rome", "france", "the", "is", "capital", "of", "3", "4"]


def tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>", *TAGS, *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    fast.add_special_tokens({"additional_special_tokens": TAGS})
    fast.chat_template = None
    return fast


def tiny_model(vocab: int, impl: str = "sdpa") -> Any:
    cfg = transformers.Qwen2Config(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    return transformers.Qwen2ForCausalLM._from_config(cfg, attn_implementation=impl)


class Recorder:
    """Wraps a reward function and keeps what TRL gave it and what it returned."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.calls = fn, []  # type: ignore[var-annotated]
        self.__name__ = fn.__name__

    def __call__(self, **kwargs: Any) -> list[float | None]:
        out = self.fn(**kwargs)
        self.calls.append((list(kwargs["completions"]), kwargs["golden_answers"], out))
        return out  # type: ignore[no-any-return]


def grpo_config(tmp_path: Path) -> Any:
    return trl.GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=10,
        max_steps=2,
        logging_steps=1,
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        seed=0,
    )


def dataset() -> Any:
    return datasets.Dataset.from_dict(
        {
            "prompt": ["the capital of france is", "the capital is"] * 4,
            "golden_answers": [["paris"], ["rome", "the capital"]] * 4,
        }
    )


@pytest.mark.parametrize("estimator", [None, "rloo"])
def test_structured_trainer_runs_and_logs_r1kit_rewards(tmp_path: Path, estimator: Any) -> None:
    tok = tokenizer()
    reward = Recorder(r1kit_trl.qa_f1_reward(golds_column="golden_answers"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = r1kit_trl.StructuredGRPOTrainer(
            model=tiny_model(len(tok)),
            reward_funcs=[reward],
            args=grpo_config(tmp_path),
            train_dataset=dataset(),
            processing_class=tok,
            advantage_estimator=estimator,
        )
        trainer.train()
    assert trainer.parallel_tags == ParallelTags.from_tokenizer(tok)
    logged = [h for h in trainer.state.log_history if "rewards/qa_f1/mean" in h]
    assert len(logged) == 2 and len(reward.calls) == 2
    for entry, (completions, golds, out) in zip(logged, reward.calls, strict=True):
        want = rewards.qa_scores(completions, golds, "f1")  # r1kit's scoring, independently
        assert out == pytest.approx(want.tolist())
        assert entry["rewards/qa_f1/mean"] == pytest.approx(want.mean().item(), rel=1e-6)


def test_structured_logps_use_the_parallel_mask(tmp_path: Path) -> None:
    tok = tokenizer()
    model = tiny_model(len(tok)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = r1kit_trl.StructuredGRPOTrainer(
            model=model,
            reward_funcs=[r1kit_trl.qa_f1_reward()],
            args=grpo_config(tmp_path),
            train_dataset=dataset(),
            processing_class=tok,
        )
    text = "the capital <Parallel> <Path> paris </Path> <Path> rome is </Path> </Parallel> 3"
    ids = torch.tensor([tok.encode(text, add_special_tokens=False)])
    mask = torch.ones_like(ids)
    keep = ids.shape[1] - 2  # the prompt is "the capital"
    with torch.no_grad():
        got, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, keep)
        layout = parse_parallel(ids, trainer.parallel_tags, response_start=2)
        logits = model(
            input_ids=ids, attention_mask=layout.attention_mask("bool"),
            position_ids=layout.position_ids,
        ).logits  # fmt: skip
        logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
        causal = torch.log_softmax(model(input_ids=ids).logits[:, :-1].float(), -1)
        causal_logp = causal.gather(-1, ids[:, 1:, None])[..., 0]
    # TRL's fused LM head computes the log-softmax in chunks: equal to ~1e-4.
    torch.testing.assert_close(got, logp[:, -keep:], rtol=1e-3, atol=1e-3)
    gap = (got - causal_logp[:, -keep:]).abs().max().item()
    assert gap > 1e-2, gap  # the structured mask and positions matter


def test_reward_functions_conversational_none_and_columns() -> None:
    qa = r1kit_trl.qa_f1_reward()
    completions: list[Any] = [
        [{"role": "assistant", "content": "<answer>paris</answer>"}],
        None,
        "<answer>rome is</answer>",
    ]
    out = qa(prompts=["p"] * 3, completions=completions, golden_answers=[["paris"], ["x"], "rome"])
    assert out == [1.0, None, pytest.approx(2 / 3)]
    with pytest.raises(ArgumentError, match=r"`golden_answer`.*golden_answers"):
        r1kit_trl.qa_f1_reward("golden_answer")(
            prompts=["p"], completions=["x"], golden_answers=["y"]
        )
    acc = r1kit_trl.math_accuracy_reward(correct=1.0, incorrect=-1.0)
    assert acc(prompts=["p", "p"], completions=["Final Answer: 4", "3"], answer=["4", "4"]) == [
        1.0,
        -1.0,
    ]
    schedule = r1kit_trl.parallel_r1_reward("alternating")
    state = type("State", (), {"global_step": 8})()  # step 9: the format phase
    good = "<Parallel><Path>a</Path><Path>b</Path></Parallel><Summary>s</Summary> Final Answer: 3"
    got = schedule(prompts=["p", "p"], completions=[good, "Final Answer: 3"], answer=["3", "3"],
                   trainer_state=state)  # fmt: skip
    assert got == [pytest.approx(1.2), 1.0]
    with pytest.raises(ArgumentError, match="trainer_state"):
        schedule(prompts=["p"], completions=[good], answer=["3"])
    assert math.isfinite(qa(prompts=["p"], completions=[""], golden_answers=["a"])[0] or 0.0)
