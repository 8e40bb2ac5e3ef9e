"""ZeroSearch's noise schedule and draws (spec: shared/spec/search_sim.md)."""

from __future__ import annotations

import math
import random
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import r1kit
from r1kit.curriculum import NoiseSchedule, hash_key


def reference_exponential(i: int, ps: float, pe: float, b: float, m: int) -> float:
    """The spec's formula, written out independently of r1kit."""
    if i >= m:
        return pe
    return ps + (b ** (i / m) - 1) / (b - 1) * (pe - ps)


# ---------------------------------------------------------------- schedule values


@pytest.mark.parametrize(
    ("step", "spec_value"),
    [(1, 0.0011), (25, 0.031), (50, 0.068), (100, 0.163), (150, 0.298), (200, 0.486), (202, 0.495)],
)
def test_spec_example(step: int, spec_value: float) -> None:
    s = NoiseSchedule(0.0, 0.5, 203, base=4.0)
    got = s.probability(step)
    assert got == pytest.approx(reference_exponential(step, 0.0, 0.5, 4.0, 203), rel=1e-12)
    decimals = 4 if spec_value < 0.01 else 3
    assert round(got, decimals) == spec_value


def test_acceptance_values_to_three_decimals() -> None:
    s = NoiseSchedule(0.0, 0.5, 203)
    assert [round(s.probability(i), 3) for i in (1, 100, 202)] == [0.001, 0.163, 0.495]
    assert round(s.probability(1), 4) == 0.0011


@pytest.mark.parametrize("step", [203, 204, 1000, 10**12])
def test_steps_past_total_give_end(step: int) -> None:
    assert NoiseSchedule(0.1, 0.7, 203).probability(step) == 0.7
    assert NoiseSchedule(0.1, 0.7, 203, kind="cosine").probability(step) == 0.7


def test_base_one_is_linear() -> None:
    e = NoiseSchedule(0.2, 0.9, 37, base=1.0)
    lin = NoiseSchedule(0.2, 0.9, 37, kind="linear")
    for i in range(50):
        expected = 0.9 if i >= 37 else 0.2 + i / 37 * 0.7
        assert e.probability(i) == pytest.approx(expected, abs=1e-15)
        assert lin.probability(i) == pytest.approx(expected, abs=1e-15)
    # Close to 1 the exponential form must approach the line continuously, not blow up.
    near = NoiseSchedule(0.2, 0.9, 37, base=1.0 + 1e-12)
    assert near.probability(10) == pytest.approx(e.probability(10), abs=1e-9)


def test_cosine_and_constant() -> None:
    c = NoiseSchedule(0.0, 1.0, 100, kind="cosine")
    assert c.probability(50) == pytest.approx(0.5, abs=1e-15)
    assert c.probability(25) == pytest.approx((1 - math.cos(math.pi / 4)) / 2, abs=1e-15)
    k = NoiseSchedule(0.3, 0.3, 10, kind="constant")
    assert [k.probability(i) for i in (0, 5, 99)] == [0.3, 0.3, 0.3]


def test_probabilities_match_scalar(tensor_path: str) -> None:
    for kind in ("exponential", "linear", "cosine"):
        s = NoiseSchedule(0.05, 0.6, 120, base=3.0, kind=kind)  # type: ignore[arg-type]
        steps = torch.arange(0, 200, dtype=torch.int32).reshape(10, 20)
        p = s.probabilities(steps)
        assert p.dtype == torch.float64 and p.shape == (10, 20)
        want = torch.tensor(
            [[s.probability(int(i)) for i in row] for row in steps], dtype=torch.float64
        )
        torch.testing.assert_close(p, want, rtol=1e-12, atol=1e-15)
    assert s.probabilities([0, 119, 120, 500]).tolist()[-2:] == [0.6, 0.6]


def test_properties_and_repr() -> None:
    s = NoiseSchedule(0.0, 0.5, 203)
    assert (s.start, s.end, s.total_steps, s.base, s.kind) == (0.0, 0.5, 203, 4.0, "exponential")
    assert "total_steps=203" in repr(s)
    assert s == NoiseSchedule(0.0, 0.5, 203) and s != NoiseSchedule(0.0, 0.5, 204)


@settings(max_examples=200, deadline=None)
@given(
    ps=st.floats(0, 1),
    pe=st.floats(0, 1),
    m=st.integers(1, 10_000),
    b=st.floats(0.01, 100),
    i=st.integers(0, 20_000),
)
def test_exponential_matches_formula_and_stays_between(
    ps: float, pe: float, m: int, b: float, i: int
) -> None:
    p = NoiseSchedule(ps, pe, m, base=b).probability(i)
    assert min(ps, pe) - 1e-12 <= p <= max(ps, pe) + 1e-12
    if abs(b - 1) > 1e-3:
        assert p == pytest.approx(reference_exponential(i, ps, pe, b, m), rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("kwargs", "exc", "arg"),
    [
        ({"total_steps": 0}, r1kit.ArgumentError, "total_steps"),
        ({"total_steps": -5}, r1kit.ArgumentError, "total_steps"),
        ({"start": -0.1}, r1kit.ArgumentError, "start"),
        ({"end": 1.5}, r1kit.ArgumentError, "end"),
        ({"end": float("nan")}, r1kit.ArgumentError, "end"),
        ({"base": 0.0}, r1kit.ArgumentError, "base"),
        ({"base": -2.0}, r1kit.ArgumentError, "base"),
        ({"base": float("inf")}, r1kit.ArgumentError, "base"),
        ({"kind": "sigmoid"}, r1kit.ArgumentError, "kind"),
        ({"kind": "constant"}, r1kit.ArgumentError, "end"),
        ({"total_steps": 10.0}, r1kit.ArgumentTypeError, "total_steps"),
        ({"start": "0"}, r1kit.ArgumentTypeError, "start"),
        ({"kind": 3}, r1kit.ArgumentTypeError, "kind"),
    ],
)
def test_bad_parameters(kwargs: dict[str, object], exc: type[Exception], arg: str) -> None:
    params: dict[str, object] = {"start": 0.0, "end": 0.5, "total_steps": 100}
    params.update(kwargs)
    with pytest.raises(exc, match=f"`{arg}`"):
        NoiseSchedule(**params)  # type: ignore[arg-type]


def test_errors_are_builtin_subclasses() -> None:
    with pytest.raises(ValueError):
        NoiseSchedule(0.0, 2.0, 10)
    with pytest.raises(TypeError):
        NoiseSchedule(0.0, 0.5, "ten")  # type: ignore[arg-type]
    assert issubclass(r1kit.ShapeError, r1kit.R1KitError)
    assert issubclass(r1kit.DtypeError, TypeError)


def test_bad_steps() -> None:
    s = NoiseSchedule(0.0, 0.5, 100)
    with pytest.raises(r1kit.ArgumentError, match="`step`"):
        s.probability(-1)
    with pytest.raises(r1kit.ArgumentError, match="`step`"):
        s.draw_noisy(-3, [1, 2])
    with pytest.raises(r1kit.ArgumentError, match="`steps`"):
        s.probabilities(torch.tensor([3, -1]))
    with pytest.raises(r1kit.DtypeError, match="`steps`"):
        s.probabilities(torch.tensor([1.0, 2.0]))
    with pytest.raises(r1kit.ArgumentTypeError, match="`steps`"):
        s.probabilities("0..10")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("keys", "exc", "arg"),
    [
        ([1, "a"], r1kit.ArgumentTypeError, "keys[1]"),
        (["a", 2], r1kit.ArgumentTypeError, "keys[1]"),
        ([1.5, 2.5], r1kit.ArgumentTypeError, "keys[0]"),
        ([True, False], r1kit.ArgumentTypeError, "keys[0]"),
        ([None], r1kit.ArgumentTypeError, "keys[0]"),
        ([b"x"], r1kit.ArgumentTypeError, "keys[0]"),
        ([2**70], r1kit.ArgumentError, "keys[0]"),
        ("abc", r1kit.ArgumentTypeError, "keys"),
        (3, r1kit.ArgumentTypeError, "keys"),
        (torch.zeros(2, 3, dtype=torch.long), r1kit.ShapeError, "keys"),
        (torch.tensor(5), r1kit.ShapeError, "keys"),
        (torch.tensor([0.5, 1.5]), r1kit.DtypeError, "keys"),
        (torch.tensor([True, False]), r1kit.DtypeError, "keys"),
        (np.array([0.5]), r1kit.ArgumentTypeError, "keys"),
        (torch.zeros(3, dtype=torch.long, device="meta"), r1kit.DeviceError, "keys"),
        (torch.zeros(3, dtype=torch.long).to_sparse(), r1kit.ArgumentTypeError, "keys"),
    ],
)
def test_bad_keys(keys: object, exc: type[Exception], arg: str, tensor_path: str) -> None:
    s = NoiseSchedule(0.0, 0.5, 100)
    with pytest.raises(exc, match=re.escape(f"`{arg}`")):
        s.draw_noisy(10, keys)  # type: ignore[arg-type]


def test_bad_turns_and_seed(tensor_path: str) -> None:
    s = NoiseSchedule(0.0, 0.5, 100)
    keys = torch.arange(4)
    with pytest.raises(r1kit.ShapeError, match="`turns`"):
        s.draw_noisy(1, keys, turns=torch.arange(3))
    with pytest.raises(r1kit.ArgumentError, match="`turns`"):
        s.draw_noisy(1, keys, turns=-1)
    with pytest.raises(r1kit.ArgumentError, match="`turns`"):
        s.draw_noisy(1, keys, turns=[0, 1, -2, 0])
    with pytest.raises(r1kit.DtypeError, match="`turns`"):
        s.draw_noisy(1, keys, turns=torch.zeros(4))
    with pytest.raises(r1kit.ArgumentError, match="`seed`"):
        s.draw_noisy(1, keys, seed=2**65)
    with pytest.raises(r1kit.ArgumentError, match="`path`"):
        s.draw_noisy(1, keys, path="gpu")  # type: ignore[arg-type]


# ---------------------------------------------------------------- draws


def test_draws_identical_on_one_and_two_threads(restore_threads: None, tensor_path: str) -> None:
    s = NoiseSchedule(0.0, 0.5, 203)
    keys = torch.arange(200_000)
    turns = torch.arange(200_000) % 3
    r1kit.set_num_threads(1)
    assert r1kit.get_num_threads() == 1
    one = s.draw_noisy(150, keys, turns=turns, seed=11)
    r1kit.set_num_threads(2)
    assert r1kit.get_num_threads() == 2
    two = s.draw_noisy(150, keys, turns=turns, seed=11)
    assert torch.equal(one, two)


def test_draws_follow_keys_not_positions(tensor_path: str) -> None:
    s = NoiseSchedule(0.0, 0.5, 203)
    keys = torch.arange(50_000) * 7919 - 10**9
    turns = torch.randint(0, 5, (50_000,))
    base = s.draw_noisy(120, keys, turns=turns, seed=5)
    perm = torch.randperm(50_000)
    shuffled = s.draw_noisy(120, keys[perm], turns=turns[perm], seed=5)
    assert torch.equal(shuffled, base[perm])
    # Each draw is independent of the rest of the batch: draw a few keys alone.
    for i in (0, 17, 49_999):
        alone = s.draw_noisy(120, keys[i : i + 1], turns=turns[i : i + 1], seed=5)
        assert bool(alone[0]) == bool(base[i])


def test_string_keys_shuffle_and_repeat() -> None:
    s = NoiseSchedule(0.0, 0.5, 203)
    uids = [f"sample-{i}" for i in range(20_000)]
    a = s.draw_noisy(202, uids, seed=1)
    rng = random.Random(0)
    order = list(range(len(uids)))
    rng.shuffle(order)
    b = s.draw_noisy(202, [uids[i] for i in order], seed=1)
    assert torch.equal(b, a[torch.tensor(order)])
    hashed = torch.tensor([hash_key(u) for u in uids])
    assert torch.equal(s.draw_noisy(202, hashed, seed=1), a)
    assert torch.equal(s.draw_noisy(202, np.array(uids), seed=1), a)


@pytest.mark.parametrize("step", [1, 100, 202])
def test_frequency_within_four_sigma(step: int, tensor_path: str) -> None:
    s = NoiseSchedule(0.0, 0.5, 203)
    n = 200_000
    p = s.probability(step)
    noisy = s.draw_noisy(step, torch.arange(n), seed=2024)
    freq = noisy.double().mean().item()
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(freq - p) <= 4 * sigma, (freq, p, sigma)


def test_turns_are_independent_draws() -> None:
    s = NoiseSchedule(0.5, 0.5, 10, kind="constant")
    n = 200_000
    keys = torch.arange(n)
    t0 = s.draw_noisy(3, keys, turns=0)
    t1 = s.draw_noisy(3, keys, turns=1)
    both = (t0 & t1).double().mean().item()
    assert abs(both - 0.25) <= 4 * math.sqrt(0.25 * 0.75 / n)


def test_seeds_and_steps_change_the_draws() -> None:
    s = NoiseSchedule(0.5, 0.5, 10, kind="constant")
    keys = torch.arange(10_000)
    a = s.draw_noisy(3, keys, seed=0)
    b = s.draw_noisy(3, keys, seed=1)
    c = s.draw_noisy(4, keys, seed=0)
    assert not torch.equal(a, b) and not torch.equal(a, c)
    # about half of the cells flip between independent seeds
    assert 0.45 < (a != b).double().mean().item() < 0.55
    assert torch.equal(a, s.draw_noisy(3, keys, seed=0))


def test_extreme_probabilities() -> None:
    keys = torch.arange(100_000)
    assert not NoiseSchedule(0.0, 0.0, 5, kind="constant").draw_noisy(1, keys).any()
    assert NoiseSchedule(1.0, 1.0, 5, kind="constant").draw_noisy(1, keys).all()
    assert not NoiseSchedule(0.0, 0.5, 203).draw_noisy(0, keys).any()


def test_key_forms_agree(tensor_path: str) -> None:
    s = NoiseSchedule(0.0, 0.5, 203)
    ints = [-(2**63), -1, 0, 1, 2**63 - 1, 12345]
    want = s.draw_noisy(77, torch.tensor(ints), turns=[0, 1, 2, 3, 4, 5], seed=9)
    assert torch.equal(s.draw_noisy(77, ints, turns=[0, 1, 2, 3, 4, 5], seed=9), want)
    assert torch.equal(s.draw_noisy(77, tuple(ints), turns=torch.arange(6), seed=9), want)
    assert torch.equal(s.draw_noisy(77, np.array(ints), turns=np.arange(6), seed=9), want)
    small = torch.tensor([1, 2, 3], dtype=torch.int16)
    assert torch.equal(s.draw_noisy(5, small), s.draw_noisy(5, small.long()))
    # uint64-range keys wrap onto int64 the same way as their two's complement
    assert torch.equal(s.draw_noisy(5, [2**64 - 1]), s.draw_noisy(5, [-1]))
    strided = torch.arange(20)[::2]
    assert torch.equal(s.draw_noisy(5, strided), s.draw_noisy(5, strided.contiguous()))
    assert s.draw_noisy(5, []).shape == (0,)
    assert s.draw_noisy(5, torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_cpu_and_device_paths_bitwise_equal() -> None:
    s = NoiseSchedule(0.01, 0.7, 500, base=2.5)
    keys = torch.randint(-(2**62), 2**62, (100_000,))
    turns = torch.randint(0, 10, (100_000,))
    for step in (0, 1, 250, 499, 600):
        cpu = s.draw_noisy(step, keys, turns=turns, seed=3, path="cpu")
        dev = s.draw_noisy(step, keys, turns=turns, seed=3, path="device")
        assert torch.equal(cpu, dev), step


@settings(max_examples=50, deadline=None)
@given(
    keys=st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=40),
    seed=st.integers(0, 2**64 - 1),
    step=st.integers(0, 300),
)
def test_paths_agree_property(keys: list[int], seed: int, step: int) -> None:
    s = NoiseSchedule(0.0, 0.5, 203)
    t = torch.tensor(keys)
    assert torch.equal(
        s.draw_noisy(step, t, seed=seed, path="cpu"),
        s.draw_noisy(step, t, seed=seed, path="device"),
    )


def test_plot_draws_the_curve() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    s = NoiseSchedule(0.0, 0.5, 203)
    ax = s.plot()
    x, y = ax.lines[0].get_data()
    assert len(x) == len(y) == int(203 * 1.1) + 1
    assert y[100] == pytest.approx(s.probability(100)) and y[-1] == 0.5
