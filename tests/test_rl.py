"""RL math (spec: shared/spec/rl_math.md): hand-worked values, independent references, verl parity.

verl 0.9.1 is installed in the test venv by `make setup` (tests/requirements-verl.txt); the
parity tests compare against its real functions.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import r1kit
from r1kit import rl

try:  # verl prints deprecation warnings on import; they are not ours
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from verl.trainer.ppo import core_algos as verl_algos
        from verl.utils import torch_functional as verl_F
except ImportError:  # pragma: no cover - make setup installs it
    verl_algos = None
    verl_F = None

needs_verl = pytest.mark.skipif(verl_algos is None, reason="verl 0.9.1 not installed")
RTOL, ATOL = 1e-5, 1e-6


def right_padded_mask(lengths: list[int], t: int) -> torch.Tensor:
    return (torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]).float()


def batch(b: int, t: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, t + 1, (b,), generator=g)
    lengths[0], lengths[-1] = t, 1  # rows of full length and of length 1
    if b > 2:
        lengths[1] = 0  # an empty row
    mask = right_padded_mask(lengths.tolist(), t)
    rewards = torch.randn(b, t, generator=g) * mask
    values = torch.randn(b, t, generator=g)
    return rewards, values, mask


# ------------------------------------------------------------------ hand-worked


def test_gae_hand_worked(tensor_path: str) -> None:
    # One row, gamma = 0.5, lam = 1, V = 0: A_2 = 1, A_1 = 0 + 0.5*1 = 0.5, A_0 = 0.25.
    r = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    _, ret = rl.gae(r, torch.zeros(2, 3), m, gamma=0.5, lam=1.0)
    assert ret.tolist() == [[0.25, 0.5, 1.0], [1.0, 0.0, 0.0]]


def test_grpo_hand_worked(tensor_path: str) -> None:
    # group a: scores 1, 0, 2 -> mean 1, std 1; group b: single sample 3.
    r = torch.tensor([[0.0, 1.0], [0.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    m = torch.tensor([[1, 1], [1, 1], [1, 0], [1, 0]])
    adv, ret = rl.grpo(r, m, ["a", "a", "a", "b"])
    want = torch.tensor([[0.0, 0.0], [-1.0, -1.0], [1.0, 0.0], [3.0, 0.0]])
    want[:3] /= 1 + 1e-6
    want[3] /= 1 + 1e-6
    torch.testing.assert_close(adv, want, rtol=1e-6, atol=1e-7)
    assert torch.equal(adv, ret)
    dr, _ = rl.grpo(r, m, ["a", "a", "a", "b"], norm_by_std=False)
    assert dr[:, 0].tolist() == [0.0, -1.0, 1.0, 3.0]


def test_trl_convention(tensor_path: str) -> None:
    """grpo(epsilon=1e-4, singleton="zero") equals TRL's formula, written out here."""
    g = torch.Generator().manual_seed(3)
    r = torch.rand(12, 5, generator=g)
    m = torch.ones(12, 5)
    ids = [0] * 4 + [1] * 4 + [2] * 3 + [3]
    adv, _ = rl.grpo(r, m, ids, epsilon=1e-4, singleton="zero")
    s = r.double().sum(1)
    want = torch.zeros(12, dtype=torch.float64)
    for gid in set(ids):
        idx = [i for i, x in enumerate(ids) if x == gid]
        if len(idx) == 1:
            continue
        grp = s[idx]
        want[idx] = (grp - grp.mean()) / (grp.std(unbiased=True) + 1e-4)
    torch.testing.assert_close(adv[:, 0].double(), want, rtol=1e-6, atol=1e-6)


def test_rloo_hand_worked(tensor_path: str) -> None:
    r = torch.tensor([[1.0], [0.0], [2.0], [5.0]])
    adv, _ = rl.rloo(r, torch.ones(4, 1), [1, 1, 1, 2])
    assert adv.flatten().tolist() == [0.0, -1.5, 1.5, 5.0]
    zero, _ = rl.rloo(r, torch.ones(4, 1), [1, 1, 1, 2], singleton="zero")
    assert zero.flatten().tolist() == [0.0, -1.5, 1.5, 0.0]


def test_constant_group_is_exactly_zero(tensor_path: str) -> None:
    r = torch.full((16, 1), 0.1)
    adv, _ = rl.grpo(r, torch.ones(16, 1), [0] * 16)
    assert torch.count_nonzero(adv) == 0


def test_masked_helpers_ignore_nan_under_mask() -> None:
    x = torch.tensor([[1.0, 2.0, float("nan")], [3.0, float("inf"), 4.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 1]])
    assert rl.masked_mean(x, m).item() == pytest.approx(2.5, rel=1e-6)
    assert rl.masked_var(x, m).item() == pytest.approx(5.0 / 3.0, rel=1e-6)
    w = rl.masked_whiten(x, m)
    assert torch.isfinite(w[m.bool()]).all()


def test_masked_helpers_paths_threads_and_grad(restore_threads: None) -> None:
    """The fused CPU kernels (several 16k-element blocks here) equal the torch composition,
    give the same bits at 1 and 2 threads, and inputs that need grad stay differentiable."""
    g = torch.Generator().manual_seed(21)
    x = torch.randn(300, 211, generator=g) * 3 + 1
    m = right_padded_mask(torch.randint(0, 212, (300,), generator=g).tolist(), 211)
    x[m == 0] = float("nan")
    for fn in (rl.masked_mean, rl.masked_var, rl.masked_whiten):
        bits = []
        for threads in (1, 2):
            r1kit.set_num_threads(threads)
            bits.append(fn(x, m, path="cpu"))
        # NaN under the mask stays NaN in whiten's output: compare bits, not values
        assert torch.equal(bits[0].view(torch.int32), bits[1].view(torch.int32)), fn.__name__
        dev = fn(x, m, path="device")
        keep = m.bool() if bits[0].dim() else ...
        torch.testing.assert_close(bits[0][keep], dev[keep], rtol=RTOL, atol=ATOL)
    sel = x[m.bool()].double()
    assert rl.masked_mean(x, m).item() == pytest.approx(sel.mean().item(), rel=1e-6)
    assert rl.masked_var(x, m).item() == pytest.approx(sel.var().item(), rel=1e-6)
    assert rl.masked_mean(x.double(), m).dtype == torch.float64
    half = rl.masked_mean(x.bfloat16(), m)
    assert half.dtype == torch.bfloat16
    xg = torch.where(m.bool(), x, 0.0).requires_grad_(True)
    rl.masked_mean(xg, m).backward()
    assert xg.grad is not None
    torch.testing.assert_close(xg.grad, m / m.sum())
    assert rl.masked_mean(torch.zeros(0, 3), torch.zeros(0, 3)).item() == 0.0


def test_masked_helpers_bad_inputs() -> None:
    x = torch.randn(4, 5)
    with pytest.raises(r1kit.ShapeError, match=r"mask.*\[4, 5\].*\[4, 3\]"):
        rl.masked_mean(x, torch.ones(4, 3))
    with pytest.raises(r1kit.DtypeError, match=r"values.*floating"):
        rl.masked_var(x.long(), torch.ones(4, 5))
    with pytest.raises(r1kit.ArgumentError, match=r"path.*'cpu', 'device'"):
        rl.masked_mean(x, torch.ones(4, 5), path="gpu")  # type: ignore[arg-type]
    one = torch.zeros(4, 5)
    one[0, 0] = 1
    for path in ("cpu", "device"):
        with pytest.raises(r1kit.ArgumentError, match=r"mask.*more than one.*sum\(mask\) = 1"):
            rl.masked_var(x, one, path=path)  # type: ignore[arg-type]


# ------------------------------------------------------------------ verl parity


@needs_verl
@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 1.0), (0.99, 0.95), (0.5, 0.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gae_matches_verl(gamma: float, lam: float, dtype: torch.dtype, tensor_path: str) -> None:
    r, v, m = batch(64, 40, seed=1)
    r, v = r.to(dtype), v.to(dtype)
    want_a, want_r = verl_algos.compute_gae_advantage_return(r, v, m.to(dtype), gamma, lam)
    adv, ret = rl.gae(r, v, m, gamma, lam)
    assert adv.dtype == dtype
    torch.testing.assert_close(adv, want_a, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(ret, want_r, rtol=RTOL, atol=ATOL)


@needs_verl
@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_reinforce_pp_matches_verl(gamma: float, tensor_path: str) -> None:
    r, _, m = batch(64, 40, seed=2)
    cfg = SimpleNamespace(gamma=gamma)
    want_a, want_r = verl_algos.compute_reinforce_plus_plus_outcome_advantage(r, m, config=cfg)
    adv, ret = rl.reinforce_plus_plus(r, m, gamma)
    torch.testing.assert_close(adv, want_a, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(ret, want_r, rtol=RTOL, atol=ATOL)


def uid_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Non-contiguous groups of sizes 1..8 given as uid strings, as verl passes them."""
    rng = np.random.default_rng(seed)
    sizes = [1, 2, 3, 8, 8, 5, 1]
    uids = np.array([f"uid-{g}" for g, n in enumerate(sizes) for _ in range(n)], dtype=object)
    rng.shuffle(uids)
    r, _, m = batch(len(uids), 12, seed=seed)
    return r, m, uids


@needs_verl
@pytest.mark.parametrize("norm_by_std", [True, False])
def test_grpo_matches_verl(norm_by_std: bool, tensor_path: str) -> None:
    r, m, uids = uid_batch(4)
    want, _ = verl_algos.compute_grpo_outcome_advantage(
        r, m, uids, norm_adv_by_std_in_grpo=norm_by_std
    )
    adv, _ = rl.grpo(r, m, uids, norm_by_std=norm_by_std)
    torch.testing.assert_close(adv, want, rtol=RTOL, atol=ATOL)
    vec, _ = verl_algos.compute_grpo_vectorized_outcome_advantage(
        r, m, uids, norm_adv_by_std_in_grpo=norm_by_std
    )
    torch.testing.assert_close(adv, vec, rtol=RTOL, atol=ATOL)


@needs_verl
def test_rloo_matches_verl(tensor_path: str) -> None:
    r, m, uids = uid_batch(5)
    want, _ = verl_algos.compute_rloo_outcome_advantage(r, m, uids)
    adv, _ = rl.rloo(r, m, uids)
    torch.testing.assert_close(adv, want, rtol=RTOL, atol=ATOL)
    want_vec, _ = verl_algos.compute_rloo_vectorized_outcome_advantage(r, m, uids)
    adv_vec, _ = rl.rloo(r, m, uids, singleton="zero")
    torch.testing.assert_close(adv_vec, want_vec, rtol=RTOL, atol=ATOL)


@needs_verl
def test_masked_helpers_match_verl() -> None:
    x = torch.randn(32, 17)
    m = right_padded_mask(torch.randint(1, 18, (32,)).tolist(), 17)
    torch.testing.assert_close(rl.masked_mean(x, m), verl_F.masked_mean(x, m))
    torch.testing.assert_close(rl.masked_var(x, m), verl_F.masked_var(x, m), rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(
        rl.masked_whiten(x, m), verl_F.masked_whiten(x, m), rtol=RTOL, atol=ATOL
    )


# ------------------------------------------------------------------ determinism, dtypes


def test_paths_and_threads_agree(restore_threads: None) -> None:
    r, v, m = batch(128, 64, seed=7)
    outs = []
    for threads in (1, 2):
        r1kit.set_num_threads(threads)
        outs.append(rl.gae(r, v, m, 0.99, 0.95, path="cpu"))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    dev = rl.gae(r, v, m, 0.99, 0.95, path="device")
    torch.testing.assert_close(dev[0], outs[0][0], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(dev[1], outs[0][1], rtol=RTOL, atol=ATOL)


def test_bf16_is_computed_in_float32() -> None:
    r, v, m = batch(16, 8, seed=9)
    adv, ret = rl.gae(r.bfloat16(), v.bfloat16(), m, 1.0, 1.0)
    assert adv.dtype == torch.bfloat16 and ret.dtype == torch.bfloat16
    ref, _ = rl.gae(r.bfloat16().float(), v.bfloat16().float(), m, 1.0, 1.0)
    torch.testing.assert_close(adv, ref.bfloat16())


def test_advantages_do_not_track_gradients() -> None:
    r, v, m = batch(8, 4, seed=1)
    v.requires_grad_(True)
    adv, ret = rl.gae(r, v, m, 1.0, 1.0, path="device")
    assert not adv.requires_grad and not ret.requires_grad


# ------------------------------------------------------------------ bad input


hashables = st.one_of(
    st.integers(-3, 3),
    st.sampled_from(["a", "b", "uid-1"]),
    st.tuples(st.integers(0, 2), st.sampled_from(["x", "y"])),
    st.booleans(),
    st.none(),
)


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(hashables, min_size=0, max_size=40), fresh=st.booleans())
def test_group_ids_follow_python_equality(ids: list[object], fresh: bool) -> None:
    """uid strings and other hashables get dense ids in order of first appearance, with Python's
    equality (1 == 1.0 == True), whether equal values are one object or distinct objects."""
    if fresh:  # equal strings as distinct objects, as after a decode
        ids = ["".join(list(x)) if isinstance(x, str) else x for x in ids]
    first: dict[object, int] = {}
    expected = [first.setdefault(x, len(first)) for x in ids]
    got = rl._group_tensor(ids)
    assert got.dtype == torch.int64 and got.tolist() == expected
    assert rl._group_tensor(np.array([*ids, None], dtype=object)).tolist()[:-1] == expected


class _Uid(str):
    """A str subclass: equal to a plain str of the same text, hashed like one."""


@settings(max_examples=200, deadline=None)
@given(
    ids=st.lists(
        st.sampled_from(["a", "b", "", "uid-1", "üid-é", "\u4e2d", "\ud800"]), max_size=40
    ),
    fresh=st.booleans(),
    subclass=st.booleans(),
)
def test_string_group_ids_follow_python_equality(
    ids: list[str], fresh: bool, subclass: bool
) -> None:
    """Lists of plain str take a byte-level path; it gives the groups of Python's equality, also
    for equal strings as distinct objects, non-ASCII text, a lone surrogate (not UTF-8) and a str
    subclass in the list (both handled by the general path)."""
    if fresh:
        ids = ["".join(list(x)) for x in ids]
    if subclass and ids:
        ids[0] = _Uid(ids[0])
    first: dict[object, int] = {}
    expected = [first.setdefault(x, len(first)) for x in ids]
    assert rl._group_tensor(ids).tolist() == expected
    assert rl._group_tensor(np.array(ids, dtype=object)).tolist() == expected


def test_bad_inputs() -> None:
    r, v, m = batch(4, 5)
    with pytest.raises(r1kit.ShapeError, match=r"`values`.*\[4, 5\].*\[4, 4\]"):
        rl.gae(r, v[:, :4], m)
    with pytest.raises(r1kit.DtypeError, match="`token_level_rewards`"):
        rl.gae(r.long(), v, m)
    with pytest.raises(r1kit.ArgumentError, match="`gamma`"):
        rl.gae(r, v, m, gamma=1.5)
    with pytest.raises(r1kit.ArgumentError, match="`lam`"):
        rl.gae(r, v, m, lam=-0.1)
    with pytest.raises(r1kit.ShapeError, match="`group_ids`"):
        rl.grpo(r, m, [0, 0, 1])
    with pytest.raises(r1kit.ArgumentError, match="`singleton`"):
        rl.grpo(r, m, [0, 0, 1, 1], singleton="nan")  # type: ignore[arg-type]
    with pytest.raises(r1kit.ShapeError, match="`token_level_rewards`"):
        rl.gae(torch.zeros(0, 5), torch.zeros(0, 5), torch.zeros(0, 5))
    with pytest.raises(r1kit.ShapeError, match="`token_level_rewards`"):
        rl.reinforce_plus_plus(torch.zeros(3, 0), torch.zeros(3, 0))
    with pytest.raises(r1kit.ShapeError, match="`token_level_rewards`"):
        rl.grpo(torch.zeros(0, 5), torch.zeros(0, 5), [])
    with pytest.raises(r1kit.ArgumentTypeError, match="`group_ids`"):
        rl.grpo(r, m, [[0], [1], [2], [3]])
    with pytest.raises(r1kit.ArgumentTypeError, match="`values`"):
        rl.gae(r, "v", m)  # type: ignore[arg-type]
    with pytest.raises(r1kit.ArgumentError, match="`response_mask`"):
        rl.gae(r, v, torch.zeros(4, 5))
    assert math.isfinite(rl.gae(r, v, m)[0].abs().max().item())


@needs_verl
def test_group_baseline_estimators_match_verl(tensor_path: str) -> None:
    r, m, uids = uid_batch(6)
    want, _ = verl_algos.compute_opo_outcome_advantage(r, m, uids)
    torch.testing.assert_close(rl.opo(r, m, uids)[0], want, rtol=RTOL, atol=ATOL)
    want, _ = verl_algos.compute_gpg_outcome_advantage(r, m, uids)
    torch.testing.assert_close(rl.gpg(r, m, uids)[0], want, rtol=RTOL, atol=ATOL)
    want, _ = verl_algos.compute_reinforce_plus_plus_baseline_outcome_advantage(r, m, uids)
    got, _ = rl.reinforce_plus_plus_baseline(r, m, uids)
    torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


@needs_verl
def test_remax_matches_verl(tensor_path: str) -> None:
    r, _, m = batch(32, 20, seed=8)
    b = torch.randn(32)
    want_a, want_r = verl_algos.compute_remax_outcome_advantage(r, b, m)
    adv, ret = rl.remax(r, m, b)
    torch.testing.assert_close(adv, want_a, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(ret, want_r, rtol=RTOL, atol=ATOL)
    with pytest.raises(r1kit.ShapeError, match="`reward_baselines`"):
        rl.remax(r, m, b[:3])
