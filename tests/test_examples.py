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


def test_quickstart_notebook_executes(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("transformers")
    nb = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError if any cell fails
    printed = [
        "".join(out.get("text", "") for out in cell.outputs)
        for cell in nb.cells
        if cell.cell_type == "code"
    ]
    assert "status: ok paths per block: [2]" in printed[1]
    assert "positions: [" in printed[1]
    assert "math: [1.0, 0.0, 0.0]" in printed[2]
    assert "rewarded sample up: True others down: True" in printed[3]
    assert "stage2_rl held-out F1" in printed[4]
