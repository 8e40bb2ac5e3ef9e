"""Shared fixtures: both tensor paths, and names for the docstring examples."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

import r1kit


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace: dict[str, Any]) -> None:
    doctest_namespace["r1kit"] = r1kit
    doctest_namespace["torch"] = torch


@pytest.fixture(params=["cpu", "device"])
def tensor_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Runs a test on the raw-memory CPU path and on the tch-ops device path.

    The device path is selected the way CI does it: R1KIT_FORCE_TENSOR_PATH=1.
    """
    if request.param == "device":
        monkeypatch.setenv("R1KIT_FORCE_TENSOR_PATH", "1")
    else:
        monkeypatch.delenv("R1KIT_FORCE_TENSOR_PATH", raising=False)
    yield request.param


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = r1kit.get_num_threads()
    yield
    r1kit.set_num_threads(before)
