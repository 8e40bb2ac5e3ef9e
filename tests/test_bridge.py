"""The torch.Tensor <-> Rust bridge: zero-copy, clear errors, exceptions from r1kit's hierarchy."""

from __future__ import annotations

import pytest
import torch

import r1kit
from r1kit import _core


@pytest.mark.parametrize(
    "tensor",
    [
        torch.arange(12, dtype=torch.int64).reshape(3, 4),
        torch.randn(5, 7),
        torch.zeros(4, dtype=torch.bool),
        torch.randn(6, 6)[:, ::2],  # a strided view
        torch.randn(3, requires_grad=True),
        torch.empty(0, 3),
    ],
)
def test_roundtrip_shares_storage(tensor: torch.Tensor) -> None:
    back = _core._roundtrip(tensor)
    assert isinstance(back, torch.Tensor)
    assert back.data_ptr() == tensor.data_ptr()
    assert back.shape == tensor.shape and back.stride() == tensor.stride()
    assert back.dtype == tensor.dtype and back.requires_grad == tensor.requires_grad
    if tensor.numel():
        # a write through one is visible through the other: the same memory
        with torch.no_grad():
            back.view(-1)[0] = 1 if tensor.dtype != torch.bool else True
        assert tensor.reshape(-1)[0].item() == back.reshape(-1)[0].item()


def test_rust_sees_the_same_memory() -> None:
    t = torch.arange(10, dtype=torch.int32)[2:]
    shape, dtype, device, ptr = _core._tensor_info(t)
    assert (shape, dtype, device, ptr) == ([8], "torch.int32", "cpu", t.data_ptr())


@pytest.mark.parametrize("value", [[1, 2, 3], (1, 2), 3, "tensor", None, object()])
def test_non_tensor_is_type_error_naming_argument(value: object) -> None:
    with pytest.raises(TypeError, match=r"`tensor`: expected a torch\.Tensor") as info:
        _core._roundtrip(value)  # type: ignore[arg-type]
    assert isinstance(info.value, r1kit.R1KitError)


def test_unsupported_tensors_are_refused() -> None:
    with pytest.raises(r1kit.DeviceError, match=r"`tensor`.*meta"):
        _core._roundtrip(torch.empty(2, device="meta"))
    with pytest.raises(r1kit.ArgumentTypeError, match=r"`tensor`.*sparse"):
        _core._roundtrip(torch.eye(3).to_sparse())


def test_outputs_are_fresh_tensors_owned_by_python() -> None:
    s = r1kit.NoiseSchedule(0.0, 0.5, 10)
    out = s.draw_noisy(3, torch.arange(5))
    assert out.is_contiguous() and out.dtype == torch.bool and out.device.type == "cpu"
    out[0] = True  # writable, not a view of an input
    del s
    assert out.shape == (5,)


def test_exception_hierarchy() -> None:
    pairs = [
        (r1kit.ArgumentError, ValueError),
        (r1kit.ArgumentTypeError, TypeError),
        (r1kit.ShapeError, ValueError),
        (r1kit.DtypeError, TypeError),
        (r1kit.DeviceError, ValueError),
        (r1kit.StructureError, ValueError),
        (r1kit.TorchError, RuntimeError),
    ]
    for cls, builtin in pairs:
        assert issubclass(cls, r1kit.R1KitError) and issubclass(cls, builtin)


def test_forced_device_path_matches_cpu_path(monkeypatch: pytest.MonkeyPatch) -> None:
    s = r1kit.NoiseSchedule(0.0, 0.5, 10)
    monkeypatch.setenv("R1KIT_FORCE_TENSOR_PATH", "1")
    # forced device path on CPU data still answers, and equals the CPU path
    assert torch.equal(
        s.draw_noisy(4, torch.arange(100)), s.draw_noisy(4, torch.arange(100), path="cpu")
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_stay_on_device() -> None:  # pragma: no cover - runs where a GPU exists
    s = r1kit.NoiseSchedule(0.0, 0.5, 203)
    keys = torch.arange(10_000, device="cuda")
    out = s.draw_noisy(100, keys, turns=keys % 3, seed=1)
    assert out.device == keys.device
    assert torch.equal(out.cpu(), s.draw_noisy(100, keys.cpu(), turns=keys.cpu() % 3, seed=1))
    with pytest.raises(r1kit.DeviceError, match="`path`"):
        s.draw_noisy(100, keys, path="cpu")
