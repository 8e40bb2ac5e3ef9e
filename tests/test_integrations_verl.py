"""r1kit inside the real verl 0.9.1: the entry point, estimators, policy losses (same numbers)."""

from __future__ import annotations

import warnings
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from r1kit import rl
from r1kit.errors import ArgumentError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    verl = pytest.importorskip("verl")  # the entry point registers r1kit here
    from verl.trainer.ppo import core_algos
    from verl.workers.config import ActorConfig

from r1kit.integrations import verl as r1kit_verl


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def outcome_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray[Any, Any]]:
    g = torch.Generator().manual_seed(seed)
    b, t = 24, 7
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()
    rewards = torch.zeros(b, t)
    rewards[torch.arange(b), lengths - 1] = torch.randint(0, 3, (b,), generator=g).float()
    uids = np.array([f"prompt-{(i * 7) % 6}" for i in range(b)], dtype=object)  # non-contiguous
    return rewards, mask, uids


def test_entry_point_registered_everything() -> None:
    for name, fn in r1kit_verl.ESTIMATORS.items():
        assert core_algos.get_adv_estimator_fn(name) is fn
    for name, fn in r1kit_verl.POLICY_LOSSES.items():
        assert core_algos.get_policy_loss_fn(name) is fn
    r1kit_verl.register()  # idempotent


@pytest.mark.parametrize(
    ("ours", "theirs", "config"),
    [
        ("r1kit_grpo", "grpo", {"norm_adv_by_std_in_grpo": True}),
        ("r1kit_grpo", "grpo", {"norm_adv_by_std_in_grpo": False}),
        ("r1kit_grpo_passk", "grpo_passk", {"norm_adv_by_std_in_grpo": True}),
        ("r1kit_rloo", "rloo", {}),
        ("r1kit_rloo_vectorized", "rloo_vectorized", {}),
        ("r1kit_reinforce_plus_plus_baseline", "reinforce_plus_plus_baseline", {}),
        ("r1kit_opo", "opo", {}),
        ("r1kit_gpg", "gpg", {}),
    ],
)
def test_group_estimators_equal_verl(ours: str, theirs: str, config: dict[str, Any]) -> None:
    rewards, mask, uids = outcome_batch()
    kwargs = {"token_level_rewards": rewards, "response_mask": mask, "index": uids}
    if theirs == "grpo":  # verl's trainer passes the flag itself for its built-in GRPO
        kwargs_v = dict(kwargs, norm_adv_by_std_in_grpo=config["norm_adv_by_std_in_grpo"])
        want = core_algos.compute_grpo_outcome_advantage(**kwargs_v)
    else:
        want = core_algos.get_adv_estimator_fn(theirs)(**kwargs, config=config)
    got = core_algos.get_adv_estimator_fn(ours)(**kwargs, config=config)
    close(got[0], want[0])
    close(got[1], want[1])


def test_reinforce_pp_and_remax_equal_verl() -> None:
    rewards, mask, _ = outcome_batch(1)
    cfg = SimpleNamespace(gamma=0.9)
    want = core_algos.get_adv_estimator_fn("reinforce_plus_plus")(
        token_level_rewards=rewards, response_mask=mask, config=cfg
    )
    got = core_algos.get_adv_estimator_fn("r1kit_reinforce_plus_plus")(
        token_level_rewards=rewards, response_mask=mask, config=cfg
    )
    close(got[0], want[0])
    baselines = torch.rand(rewards.shape[0])
    want = core_algos.get_adv_estimator_fn("remax")(
        token_level_rewards=rewards, response_mask=mask, reward_baselines=baselines, config=cfg
    )
    got = core_algos.get_adv_estimator_fn("r1kit_remax")(
        token_level_rewards=rewards, response_mask=mask, reward_baselines=baselines, config=cfg
    )
    close(got[0], want[0])


def test_patched_core_algos_give_verls_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    rewards, mask, uids = outcome_batch(2)
    values = torch.randn_like(rewards)
    want_gae = core_algos.compute_gae_advantage_return(rewards, values, mask, 0.99, 0.95)
    want_grpo = core_algos.compute_grpo_outcome_advantage(rewards, mask, uids)
    monkeypatch.setattr(core_algos, "compute_gae_advantage_return", None)
    monkeypatch.setattr(core_algos, "compute_grpo_outcome_advantage", None)
    r1kit_verl.patch_core_algos()
    close(
        core_algos.compute_gae_advantage_return(rewards, values, mask, 0.99, 0.95)[0], want_gae[0]
    )
    close(core_algos.compute_grpo_outcome_advantage(rewards, mask, uids)[0], want_grpo[0])


def actor_config(**extra: Any) -> Any:
    return ActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio=0.2,
        clip_ratio_low=0.2,
        clip_ratio_high=0.28,
        clip_ratio_c=3.0,
        **extra,
    )


@pytest.mark.parametrize("kind", ["vanilla", "gspo", "gpg", "cispo"])
@pytest.mark.parametrize(
    "info", [{}, {"dp_size": 2, "batch_num_tokens": 160, "global_batch_size": 20}]
)
def test_policy_losses_equal_verl(kind: str, info: dict[str, Any]) -> None:
    g = torch.Generator().manual_seed(3)
    b, t = 10, 12
    old = -torch.rand(b, t, generator=g) * 2
    lp0 = old + torch.randn(b, t, generator=g) * 0.5
    adv = torch.randn(b, t, generator=g)
    mask = (torch.arange(t)[None, :] < torch.randint(0, t + 1, (b,), generator=g)[:, None]).float()
    cfg = actor_config(global_batch_info=info)
    for mode in ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]:
        lp_v, lp_r = lp0.clone().requires_grad_(True), lp0.clone().requires_grad_(True)
        want, want_m = core_algos.get_policy_loss_fn(kind)(old, lp_v, adv, mask, mode, cfg)
        got, got_m = core_algos.get_policy_loss_fn(f"r1kit_{kind}")(old, lp_r, adv, mask, mode, cfg)
        close(got, want)
        assert got_m.keys() == want_m.keys()
        for key in want_m:
            assert got_m[key] == pytest.approx(want_m[key], rel=1e-5, abs=1e-6)
        close(torch.autograd.grad(got, lp_r)[0], torch.autograd.grad(want, lp_v)[0])


def test_rollout_weights_fall_back_to_verl() -> None:
    g = torch.Generator().manual_seed(4)
    old, adv = -torch.rand(4, 5, generator=g), torch.randn(4, 5, generator=g)
    lp, mask, w = old + 0.1, torch.ones(4, 5), torch.rand(4, 5, generator=g)
    cfg = actor_config()
    want, _ = core_algos.get_policy_loss_fn("vanilla")(old, lp, adv, mask, "token-mean", cfg, w)
    got, _ = r1kit_verl.POLICY_LOSSES["r1kit_vanilla"](old, lp, adv, mask, "token-mean", cfg, w)
    close(got, want)
    plain, _ = r1kit_verl.POLICY_LOSSES["r1kit_vanilla"](old, lp, adv, mask, "token-mean", cfg)
    close(plain, rl.policy_loss("vanilla", old, lp, adv, mask, 0.2, 0.28, 3.0)[0])


def test_missing_inputs_are_clear_errors() -> None:
    rewards, mask, _ = outcome_batch()
    with pytest.raises(ArgumentError, match="index"):
        r1kit_verl.ESTIMATORS["r1kit_grpo"](token_level_rewards=rewards, response_mask=mask)
    with pytest.raises(ArgumentError, match=r"values.*patch_core_algos"):
        r1kit_verl.ESTIMATORS["r1kit_gae"](token_level_rewards=rewards, response_mask=mask)
    with pytest.raises(ArgumentError, match="reward_baselines"):
        r1kit_verl.ESTIMATORS["r1kit_remax"](token_level_rewards=rewards, response_mask=mask)


def word_tokenizer() -> Any:
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "<unk>", "<answer>", "</answer>", "paris", "rome", "is", "the", "capital",
             "Final", "Answer:", "3", "4", "q"]  # fmt: skip
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>"
    )


def test_naive_reward_manager_scores_through_compute_score() -> None:
    from verl import DataProto
    from verl.workers.reward_manager.naive import NaiveRewardManager

    from r1kit import rewards

    tok = word_tokenizer()
    prompts = ["q", "q", "the q", "q"]
    responses = ["<answer> paris </answer>", "<answer> rome is </answer>", "Final Answer: 4",
                 "the capital"]  # fmt: skip
    truths = [{"target": ["paris"]}, {"target": ["rome"]}, "4", {"target": ["paris"]}]
    sources = ["nq", "hotpotqa", "gsm8k", "triviaqa"]

    def pad(texts: list[str], left: bool) -> tuple[torch.Tensor, torch.Tensor]:
        ids = [tok.encode(t, add_special_tokens=False) for t in texts]
        n = max(map(len, ids))
        rows = [([0] * (n - len(i)) + i) if left else (i + [0] * (n - len(i))) for i in ids]
        mask = [([0] * (n - len(i)) + [1] * len(i)) if left else ([1] * len(i) + [0] * (n - len(i)))
                for i in ids]  # fmt: skip
        return torch.tensor(rows), torch.tensor(mask)

    p_ids, p_mask = pad(prompts, left=True)
    r_ids, r_mask = pad(responses, left=False)
    data = DataProto.from_dict(
        tensors={
            "prompts": p_ids,
            "responses": r_ids,
            "attention_mask": torch.cat([p_mask, r_mask], dim=1),
        },
        non_tensors={
            "data_source": np.array(sources, dtype=object),
            "reward_model": np.array([{"ground_truth": t} for t in truths], dtype=object),
        },
    )
    manager = NaiveRewardManager(tok, num_examine=0, compute_score=r1kit_verl.compute_score)
    out = manager(data, return_dict=True)
    scores = out["reward_tensor"].sum(dim=1)
    decoded = [tok.decode(tok.encode(r, add_special_tokens=False)) for r in responses]
    want_qa = rewards.qa_scores([decoded[i] for i in (0, 1, 3)], [["paris"], ["rome"], ["paris"]])
    close(scores[[0, 1, 3]], want_qa)
    assert scores.tolist() == pytest.approx([1.0, 2 / 3, 1.0, 0.0])
    assert out["reward_extra_info"]["pred"][0] == "paris"


def test_compute_score_tasks_and_errors() -> None:
    good = "<Parallel><Path>a</Path><Path>b</Path></Parallel><Summary>s</Summary> Final Answer: 3"
    info = {"r1kit_task": "parallel_r1", "step": 9}
    out = r1kit_verl.compute_score("my_math", good, "3", info)
    assert out == {"score": pytest.approx(1.2), "acc": True, "parallel": True,
                   "format_valid": True}  # fmt: skip
    assert r1kit_verl.compute_score("my_math", good, "3", dict(info, step=1))["score"] == 1.0
    assert r1kit_verl.compute_score("openai/gsm8k", "Final Answer: 3", "3")["score"] == 1.0
    with pytest.raises(ArgumentError, match=r"data_source.*r1kit_task"):
        r1kit_verl.compute_score("unknown_source", "x", "y")
    with pytest.raises(ArgumentError, match="step"):
        r1kit_verl.compute_score("x", good, "3", {"r1kit_task": "parallel_r1"})
    batch = r1kit_verl.compute_score_batch(
        ["nq", "gsm8k"], ["<answer>paris</answer>", "Final Answer: 5"], [["paris"], "4"]
    )
    assert [b["score"] for b in batch] == [1.0, 0.0]
