"""The scripts in examples/ run end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_noise_curriculum_example(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "noise.png"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "noise_curriculum.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MPLBACKEND": "Agg"},
        check=True,
    )
    assert "p(100) = 0.1633" in result.stdout
    assert "p(203) = 0.5000" in result.stdout
    assert out.stat().st_size > 10_000  # a real PNG, not an empty figure
