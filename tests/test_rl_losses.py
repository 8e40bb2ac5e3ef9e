"""KL penalties, policy losses, loss aggregation, entropy, pass@k (spec: shared/spec/rl_math.md).

Values and gradients against hand-worked examples and against the real verl 0.9.1 functions
(installed by `make setup`), on both tensor paths.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest
import torch

import r1kit
from r1kit import rl
from r1kit.errors import ArgumentError, DtypeError, ShapeError

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from verl.trainer.ppo import core_algos as verl_algos
        from verl.utils import torch_functional as verl_F
        from verl.workers.config import ActorConfig
except ImportError:  # pragma: no cover - make setup installs it
    verl_algos = None

needs_verl = pytest.mark.skipif(verl_algos is None, reason="verl 0.9.1 not installed")
RTOL, ATOL = 1e-5, 1e-6
KL_KINDS = ["kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3", "kl+", "k1+", "abs+", "k3+",
            "low_var_kl+", "mse+", "k2+"]  # fmt: skip
AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean",
             "seq-mean-token-sum-norm"]  # fmt: skip
POLICY_KINDS = ["vanilla", "gspo", "gpg", "cispo"]


def mask_of(lengths: list[int], t: int) -> torch.Tensor:
    return (torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]).float()


def loss_batch(b: int = 9, t: int = 13, seed: int = 0, spread: float = 0.4) -> dict[str, Any]:
    """Random log-probs whose ratios fall inside and outside the clip range, rows of length
    t, 1 and 0, and advantages of both signs (some exactly 0)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, t + 1, (b,), generator=g).tolist()
    lengths[0], lengths[1], lengths[2] = t, 1, 0
    old = -torch.rand(b, t, generator=g) * 3
    lp = old + torch.randn(b, t, generator=g) * spread
    adv = torch.randn(b, t, generator=g)
    adv[3, :4] = 0.0
    return {"old": old, "lp": lp, "adv": adv, "mask": mask_of(lengths, t)}


def verl_config(low: float = 0.2, high: float = 0.28, c: float = 3.0) -> Any:
    return ActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio=0.2,
        clip_ratio_low=low,
        clip_ratio_high=high,
        clip_ratio_c=c,
    )


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL, equal_nan=True)


# ------------------------------------------------------------------ hand-worked


def test_kl_values_hand_worked(tensor_path: str) -> None:
    lp = torch.tensor([-1.0, -3.0, 0.0, -40.0])
    ref = torch.tensor([-2.0, -1.0, 0.0, 0.0])  # d = 1, -2, 0, -40
    want = {
        "kl": [1.0, -2.0, 0.0, -40.0],
        "abs": [1.0, 2.0, 0.0, 40.0],
        "mse": [0.5, 2.0, 0.0, 800.0],
        # x = -d clamped to [-20, 20]: e^-1 + 1 - 1, e^2 - 2 - 1, 0, clamp(e^20 - 21) = 10
        "low_var_kl": [math.exp(-1), math.exp(2) - 3, 0.0, 10.0],
    }
    for kind, values in want.items():
        out = rl.kl_penalty(lp, ref, kind)  # type: ignore[arg-type]
        close(out, torch.tensor(values))
        close(rl.kl_penalty(lp, ref, kind + "+"), out)  # type: ignore[arg-type]


def test_straight_through_gradient_is_k2s(tensor_path: str) -> None:
    lp = torch.tensor([-1.0, -3.0, 0.5], requires_grad=True)
    ref = torch.tensor([-2.0, -1.0, 0.5])
    rl.kl_penalty(lp, ref, "k3+").sum().backward()
    assert lp.grad is not None
    close(lp.grad, torch.tensor([1.0, -2.0, 0.0]))  # d


def test_vanilla_dual_clip_hand_worked(tensor_path: str) -> None:
    # Row of 4 tokens, old = 0: r = e^0.5 (clipped at 1.2, A=1), r = e^2 with A=-1 (dual clip
    # caps at 3), r = e^0.1 inside the range (A=2), and a masked token holding NaN.
    old = torch.zeros(1, 4)
    lp = torch.tensor([[0.5, 2.0, 0.1, float("nan")]], requires_grad=True)
    adv = torch.tensor([[1.0, -1.0, 2.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, metrics = rl.policy_loss("vanilla", old, lp, adv, mask, 0.2, 0.2, 3.0)
    want = (-1.2 + 3.0 - 2.0 * math.exp(0.1)) / 3
    assert loss.item() == pytest.approx(want, rel=1e-6)
    # clipped: only token 0 (L2 = -1.2 > L1 = -1.65); token 1 has L1 = 7.39 > L2 = 1.2.
    assert metrics["actor/pg_clipfrac"] == pytest.approx(1 / 3, rel=1e-6)
    assert metrics["actor/pg_clipfrac_lower"] == pytest.approx(1 / 3, rel=1e-6)
    assert metrics["actor/ppo_kl"] == pytest.approx(-(0.5 + 2.0 + 0.1) / 3, rel=1e-6)
    loss.backward()
    assert lp.grad is not None
    close(lp.grad, torch.tensor([[0.0, 0.0, -2.0 * math.exp(0.1) / 3, 0.0]]))


def test_agg_modes_hand_worked(tensor_path: str) -> None:
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, float("inf")], [5.0, 6.0, 7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    want = {
        "token-mean": 10 / 4,
        "token-sum": 10.0,
        "seq-mean-token-sum": (6 + 4) / 2,
        "seq-mean-token-mean": (2 + 4) / 2,
        "seq-mean-token-sum-norm": (6 + 4) / 2 / 3,
    }
    for mode, value in want.items():
        assert rl.agg_loss(loss, mask, mode).item() == pytest.approx(value, rel=1e-6), mode  # type: ignore[arg-type]
    out = rl.agg_loss(loss, mask, "seq-mean-token-sum-norm", loss_scale_factor=10.0)
    assert out.item() == pytest.approx(0.5)


def test_kl_controllers() -> None:
    fixed = rl.FixedKLController(0.1)
    fixed.update(5.0, 100)
    assert fixed.value == 0.1
    ctl = rl.AdaptiveKLController(init_kl_coef=0.2, target_kl=1.0, horizon=1000)
    ctl.update(current_kl=3.0, n_steps=100)  # error clipped to 0.2: x 1.02
    assert ctl.value == pytest.approx(0.204)
    ctl.update(current_kl=0.9, n_steps=100)  # error -0.1: x 0.99
    assert ctl.value == pytest.approx(0.204 * 0.99)


def test_apply_kl_penalty_updates_controller(tensor_path: str) -> None:
    scores = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    old = torch.tensor([[-1.0, -1.0], [-1.0, float("nan")]])
    ref = torch.tensor([[-1.5, -2.0], [-1.0, 0.0]])  # kl = 0.5, 1.0 | 0.0, masked
    mask = torch.tensor([[1, 1], [1, 0]])
    ctl = rl.AdaptiveKLController(0.1, target_kl=0.25, horizon=4)
    rewards, metrics = rl.apply_kl_penalty(scores, old, ref, mask, "kl", ctl)
    close(rewards, torch.tensor([[-0.05, 0.9], [2.0, 0.0]]))
    assert metrics["actor/reward_kl_penalty"] == pytest.approx((0.75 + 0.0) / 2, rel=1e-6)
    assert metrics["actor/reward_kl_penalty_coeff"] == 0.1
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 2 / 4))  # kl/target - 1 = 0.5 -> 0.2


def test_grpo_passk_hand_worked(tensor_path: str) -> None:
    r = torch.tensor([[1.0], [0.0], [0.5], [2.0], [2.0]])
    adv, ret = rl.grpo_passk(r, torch.ones(5, 1), ["a", "a", "a", "b", "b"])
    std_a = torch.tensor([1.0, 0.0, 0.5]).std().item()
    close(adv.flatten(), torch.tensor([0.5 / (std_a + 1e-6), 0.0, 0.0, 0.0, 0.0]))
    assert torch.equal(adv, ret)
    with pytest.raises(ArgumentError, match=r"group_ids.*at least 2"):
        rl.grpo_passk(r, torch.ones(5, 1), [0, 0, 0, 0, 1])


def test_entropy_hand_worked(tensor_path: str) -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, float("-inf"), 0.0, float("-inf")]])
    close(rl.entropy_from_logits(logits), torch.tensor([math.log(4), math.log(2)]))


# ------------------------------------------------------------------ verl parity


@needs_verl
@pytest.mark.parametrize("kind", KL_KINDS)
def test_kl_penalty_matches_verl(kind: str, tensor_path: str) -> None:
    g = torch.Generator().manual_seed(1)
    lp = -torch.rand(6, 11, generator=g) * 5
    ref = -torch.rand(6, 11, generator=g) * 5
    lp[0, :3] = torch.tensor([-40.0, 0.0, -30.0])  # hit the +-20 and +-10 clamps
    ref[0, :3] = torch.tensor([0.0, -40.0, -30.0])
    ref.requires_grad_(True)
    mine_lp = lp.clone().requires_grad_(True)
    mine = rl.kl_penalty(mine_lp, ref, kind)  # type: ignore[arg-type]
    verl_lp = lp.clone().requires_grad_(True)
    want = verl_algos.kl_penalty(verl_lp, ref, kind)
    close(mine, want)
    weights = torch.randn(6, 11, generator=g)
    (g_lp, g_ref) = torch.autograd.grad((mine * weights).sum(), (mine_lp, ref))
    (w_lp, w_ref) = torch.autograd.grad((want * weights).sum(), (verl_lp, ref))
    close(g_lp, w_lp)
    close(g_ref, w_ref)


@needs_verl
@pytest.mark.parametrize("kind", ["kl", "low_var_kl", "k3+", "abs"])
def test_apply_kl_penalty_matches_verl(kind: str, tensor_path: str) -> None:
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(7, 9, generator=g)
    old, ref = -torch.rand(7, 9, generator=g) * 4, -torch.rand(7, 9, generator=g) * 4
    mask = mask_of([9, 1, 0, 5, 9, 3, 2], 9)
    beta = 0.05
    # verl's trainer function (ray_trainer.apply_kl_penalty), rebuilt from its pieces:
    kld = verl_algos.kl_penalty(old, ref, kl_penalty=kind) * mask
    want_rewards = scores - beta * kld
    want_kl = torch.mean(verl_F.masked_mean(kld, mask=mask, axis=-1), dim=0).item()
    verl_ctl = verl_algos.AdaptiveKLController(beta, 0.01, 500)
    verl_ctl.update(current_kl=want_kl, n_steps=7)
    ctl = rl.AdaptiveKLController(beta, 0.01, 500)
    rewards, metrics = rl.apply_kl_penalty(scores, old, ref, mask, kind, ctl)  # type: ignore[arg-type]
    close(rewards, want_rewards)
    assert metrics["actor/reward_kl_penalty"] == pytest.approx(want_kl, rel=RTOL, abs=ATOL)
    assert ctl.value == pytest.approx(verl_ctl.value, rel=1e-12)


@needs_verl
@pytest.mark.parametrize("mode", AGG_MODES)
def test_agg_loss_matches_verl(mode: str, tensor_path: str) -> None:
    g = torch.Generator().manual_seed(3)
    mask = mask_of([13, 1, 0, 7, 13, 2, 11, 5], 13)
    loss = torch.randn(8, 13, generator=g)
    mine_in, verl_in = loss.clone().requires_grad_(True), loss.clone().requires_grad_(True)
    for lsf in [None, 64.0] if mode == "seq-mean-token-sum-norm" else [None]:
        mine = rl.agg_loss(mine_in, mask, mode, lsf)  # type: ignore[arg-type]
        want = verl_algos.agg_loss(verl_in, mask, mode, loss_scale_factor=lsf)
        close(mine, want)
        close(torch.autograd.grad(mine, mine_in)[0], torch.autograd.grad(want, verl_in)[0])


def verl_policy_loss(kind: str, b: dict[str, Any], agg: str, cfg: Any) -> Any:
    fn = verl_algos.get_policy_loss_fn(kind)
    return fn(b["old"], b["lp"], b["adv"], b["mask"], loss_agg_mode=agg, config=cfg)


@needs_verl
@pytest.mark.parametrize("kind", POLICY_KINDS)
@pytest.mark.parametrize("agg", AGG_MODES)
def test_policy_loss_matches_verl(kind: str, agg: str, tensor_path: str) -> None:
    for seed, spread in [(4, 0.4), (5, 3.0)]:  # 3.0: many tokens beyond every clip
        base = loss_batch(seed=seed, spread=spread)
        cfg = verl_config()
        verl_b = dict(base, lp=base["lp"].clone().requires_grad_(True))
        want, want_metrics = verl_policy_loss(kind, verl_b, agg, cfg)
        mine_lp = base["lp"].clone().requires_grad_(True)
        mine, metrics = rl.policy_loss(
            kind,  # type: ignore[arg-type]
            base["old"], mine_lp, base["adv"], base["mask"], 0.2, 0.28, 3.0, agg,  # type: ignore[arg-type]
        )  # fmt: skip
        close(mine, want)
        assert metrics.keys() == want_metrics.keys()
        for key, value in want_metrics.items():
            assert metrics[key] == pytest.approx(value, rel=RTOL, abs=ATOL), key
        close(torch.autograd.grad(mine, mine_lp)[0], torch.autograd.grad(want, verl_b["lp"])[0])


@needs_verl
@pytest.mark.parametrize("kind", ["vanilla", "gpg", "cispo"])
def test_nan_under_the_mask_matches_verl(kind: str, tensor_path: str) -> None:
    """NaN log-probs under mask 0: verl's token-mean drops them (masked_sum), and so does r1kit
    (values and gradients). Where verl multiplies by the mask instead (the seq-mean aggregations,
    GSPO's sequence ratio) NaN leaks into verl's loss; r1kit's stays finite, on purpose."""
    base = loss_batch(seed=12)
    lp = base["lp"].clone()
    lp[base["mask"] == 0] = float("nan")
    verl_lp, mine_lp = lp.clone().requires_grad_(True), lp.clone().requires_grad_(True)
    want, _ = verl_policy_loss(kind, dict(base, lp=verl_lp), "token-mean", verl_config())
    mine, _ = rl.policy_loss(
        kind,  # type: ignore[arg-type]
        base["old"], mine_lp, base["adv"], base["mask"], 0.2, 0.28, 3.0, "token-mean",
    )  # fmt: skip
    assert math.isfinite(mine.item())
    close(mine, want)
    grad, verl_grad = torch.autograd.grad(mine, mine_lp)[0], torch.autograd.grad(want, verl_lp)[0]
    on = base["mask"] != 0
    close(grad[on], verl_grad[on])
    # Masked positions get exactly 0 (verl's CISPO gives 0 * NaN = NaN there).
    assert torch.equal(grad[~on], torch.zeros_like(grad[~on]))
    verl_seq, _ = verl_policy_loss(kind, dict(base, lp=lp), "seq-mean-token-mean", verl_config())
    mine_seq, _ = rl.policy_loss(kind, base["old"], lp, base["adv"], base["mask"],  # type: ignore[arg-type]
                                 agg="seq-mean-token-mean")  # fmt: skip
    assert math.isnan(verl_seq.item()) and math.isfinite(mine_seq.item())
    gspo, _ = rl.policy_loss("gspo", base["old"], lp, base["adv"], base["mask"])
    assert math.isfinite(gspo.item())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tensors_on_different_devices() -> None:  # pragma: no cover - no GPU in CI
    b = loss_batch()
    with pytest.raises(r1kit.errors.DeviceError, match="ref_log_prob"):
        rl.kl_penalty(b["lp"].cuda(), b["old"], "kl")
    with pytest.raises(r1kit.errors.DeviceError, match="advantages"):
        rl.policy_loss("vanilla", b["old"].cuda(), b["lp"].cuda(), b["adv"], b["mask"].cuda())
    cuda = {k: v.cuda() for k, v in b.items()}
    lp = cuda["lp"].clone().requires_grad_(True)
    loss, _ = rl.policy_loss("vanilla", cuda["old"], lp, cuda["adv"], cuda["mask"])
    loss.backward()
    cpu_lp = b["lp"].clone().requires_grad_(True)
    want, _ = rl.policy_loss("vanilla", b["old"], cpu_lp, b["adv"], b["mask"])
    want.backward()
    assert lp.grad is not None and cpu_lp.grad is not None
    close(loss.cpu(), want)
    close(lp.grad.cpu(), cpu_lp.grad)


@needs_verl
def test_policy_loss_bf16_and_float64() -> None:
    base = loss_batch(seed=6)
    for dtype in (torch.float64, torch.bfloat16):
        cast = {k: v.to(dtype) for k, v in base.items()}
        lp = cast["lp"].clone().requires_grad_(True)
        loss, _ = rl.policy_loss("vanilla", cast["old"], lp, cast["adv"], cast["mask"])
        assert loss.dtype == dtype
        loss.backward()
        assert lp.grad is not None and lp.grad.dtype == dtype
        ref = {k: v.float() for k, v in cast.items()}
        want, _ = verl_policy_loss("vanilla", ref, "token-mean", verl_config(0.2, 0.2))
        tol = 1e-2 if dtype == torch.bfloat16 else 1e-6
        assert loss.float().item() == pytest.approx(want.item(), rel=tol)


@needs_verl
@pytest.mark.parametrize("norm_by_std", [True, False])
def test_grpo_passk_matches_verl(norm_by_std: bool, tensor_path: str) -> None:
    g = torch.Generator().manual_seed(7)
    r = torch.zeros(24, 6)
    r[:, -1] = torch.randint(0, 4, (24,), generator=g).float() / 3
    mask = torch.ones(24, 6)
    uids = [f"q{(i * 5) % 6}" for i in range(24)]  # non-contiguous groups of 4
    import numpy as np

    index = np.array(uids, dtype=object)
    config = {"norm_adv_by_std_in_grpo": norm_by_std}
    want, _ = verl_algos.compute_grpo_passk_outcome_advantage(r, mask, index, config=config)
    mine, _ = rl.grpo_passk(r, mask, index, norm_by_std=norm_by_std)
    close(mine, want)


@needs_verl
def test_entropy_matches_verl(tensor_path: str) -> None:
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(3, 5, 17, generator=g) * 4
    mine_in, verl_in = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    mine, want = rl.entropy_from_logits(mine_in), verl_F.entropy_from_logits(verl_in)
    close(mine, want)
    w = torch.randn(3, 5, generator=g)
    close(
        torch.autograd.grad((mine * w).sum(), mine_in)[0],
        torch.autograd.grad((want * w).sum(), verl_in)[0],
    )


# ------------------------------------------------------------------ paths, threads, autograd


def test_paths_and_threads_agree(restore_threads: None) -> None:
    base = loss_batch(b=64, t=300, seed=9, spread=1.0)
    results = []
    for threads in (1, 2):
        r1kit.set_num_threads(threads)
        lp = base["lp"].clone().requires_grad_(True)
        loss, metrics = rl.policy_loss("vanilla", base["old"], lp, base["adv"], base["mask"])
        loss.backward()
        kl = rl.kl_penalty(base["lp"], base["old"], "low_var_kl", path="cpu")
        agg = rl.agg_loss(kl, base["mask"], "seq-mean-token-mean", path="cpu")
        results.append((loss, lp.grad, metrics, kl, agg))
    (l1, g1, m1, k1, a1), (l2, g2, m2, k2, a2) = results
    assert torch.equal(l1, l2) and torch.equal(g1, g2) and m1 == m2
    assert torch.equal(k1, k2) and torch.equal(a1, a2)
    lp = base["lp"].clone().requires_grad_(True)
    dev, dev_metrics = rl.policy_loss(
        "vanilla", base["old"], lp, base["adv"], base["mask"], path="device"
    )
    dev.backward()
    close(dev, l1)
    assert lp.grad is not None
    close(lp.grad, g1)
    for key, value in m1.items():
        assert dev_metrics[key] == pytest.approx(value, rel=RTOL, abs=ATOL)
    close(rl.kl_penalty(base["lp"], base["old"], "low_var_kl", path="device"), k1)


def test_gradients_flow_to_advantages_through_the_composed_path() -> None:
    """When advantages require grad too, the tch composition (recorded by autograd) runs."""
    base = loss_batch(seed=10)
    adv = base["adv"].clone().requires_grad_(True)
    lp = base["lp"].clone().requires_grad_(True)
    loss, _ = rl.policy_loss("vanilla", base["old"], lp, adv, base["mask"])
    loss.backward()
    assert adv.grad is not None and lp.grad is not None
    lp2 = base["lp"].clone().requires_grad_(True)
    loss2, _ = rl.policy_loss("vanilla", base["old"], lp2, base["adv"], base["mask"])
    loss2.backward()
    assert lp2.grad is not None
    close(lp.grad, lp2.grad)


def test_no_grad_outputs_have_no_history() -> None:
    base = loss_batch(seed=11)
    lp = base["lp"].clone().requires_grad_(True)
    with torch.no_grad():
        loss, _ = rl.policy_loss("gspo", base["old"], lp, base["adv"], base["mask"])
        kl = rl.kl_penalty(lp, base["old"], "k3")
    assert loss.grad_fn is None and kl.grad_fn is None


# ------------------------------------------------------------------ bad input


def test_bad_inputs() -> None:
    b = loss_batch()
    with pytest.raises(ArgumentError, match=r"kind.*'low_var_kl'.*'\+' suffix"):
        rl.kl_penalty(b["lp"], b["old"], "k4")  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match=r"kind.*'vanilla', 'gspo', 'gpg', 'cispo'"):
        rl.policy_loss("ppo", b["old"], b["lp"], b["adv"], b["mask"])  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match=r"agg.*'token-mean'.*'seq-mean-token-sum-norm'"):
        rl.agg_loss(b["lp"], b["mask"], "mean")  # type: ignore[arg-type]
    with pytest.raises(ShapeError, match=r"ref_log_prob.*\[9, 13\].*\[9, 12\]"):
        rl.kl_penalty(b["lp"], b["old"][:, :12], "kl")
    with pytest.raises(ShapeError, match=r"advantages.*\[9, 13\].*\[13, 9\]"):
        rl.policy_loss("vanilla", b["old"], b["lp"], b["adv"].T, b["mask"])
    with pytest.raises(DtypeError, match=r"log_prob.*floating"):
        rl.kl_penalty(b["lp"].long(), b["old"], "kl")
    with pytest.raises(DtypeError, match=r"old_log_prob.*floating"):
        rl.policy_loss("vanilla", b["old"].long(), b["lp"], b["adv"], b["mask"])
    with pytest.raises(ArgumentError, match=r"clip_ratio_c.*> 1"):
        rl.policy_loss("vanilla", b["old"], b["lp"], b["adv"], b["mask"], clip_ratio_c=0.5)
    with pytest.raises(ArgumentError, match="clip_ratio_low"):
        rl.policy_loss("vanilla", b["old"], b["lp"], b["adv"], b["mask"], clip_ratio_low=-1.0)
    with pytest.raises(ArgumentError, match="loss_scale_factor"):
        rl.agg_loss(b["lp"], b["mask"], "seq-mean-token-sum-norm", loss_scale_factor=0.0)
    with pytest.raises(ShapeError, match="non-empty"):
        rl.policy_loss("vanilla", *(torch.zeros(0, 4) for _ in range(4)))
    with pytest.raises(ShapeError, match="non-empty"):
        rl.policy_loss("gpg", *(torch.zeros(3, 0) for _ in range(4)))
    with pytest.raises(ShapeError, match=r"logits.*V >= 1"):
        rl.entropy_from_logits(torch.zeros(3, 0))
    with pytest.raises(ArgumentError, match=r"beta.*finite"):
        rl.apply_kl_penalty(b["adv"], b["old"], b["lp"], b["mask"], "kl", float("nan"))
    with pytest.raises(ArgumentError, match="horizon"):
        rl.AdaptiveKLController(0.1, 0.1, 0)
    with pytest.raises(r1kit.errors.ArgumentTypeError, match=r"log_prob.*torch.Tensor"):
        rl.kl_penalty([1.0], b["old"], "kl")  # type: ignore[arg-type]


def test_gil_released(restore_threads: None) -> None:
    from gil import intervals_overlap

    r1kit.set_num_threads(1)
    g = torch.Generator().manual_seed(13)
    lp, ref = torch.randn(4096, 4096, generator=g), torch.randn(4096, 4096, generator=g)
    mask = torch.ones(4096, 4096)
    assert intervals_overlap(lambda: rl.kl_penalty(lp, ref, "low_var_kl"))
    assert intervals_overlap(lambda: rl.policy_loss("vanilla", ref, lp, lp, mask))
    assert intervals_overlap(lambda: rl.gae(lp[:2048], ref[:2048], mask[:2048]))
