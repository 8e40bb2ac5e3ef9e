"""`make wheel` output installs into a fresh torch 2.13.0 venv and imports there.

This is what a user's `pip install r1kit-*.whl` does. It takes a minute or two (a new venv gets
its own torch from pip's cache), so it runs once per `make test`.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


@pytest.mark.skipif(
    importlib.util.find_spec("maturin") is None, reason="maturin comes with the dev extra"
)
def test_wheel_installs_into_fresh_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    # The build links the libtorch of the environment running the tests (torch-sys finds it
    # through VIRTUAL_ENV's `python`), exactly as `make wheel` does.
    build_env = {
        **os.environ,
        "VIRTUAL_ENV": sys.prefix,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "LIBTORCH_USE_PYTORCH": "1",
    }
    maturin = [sys.executable, "-m", "maturin", "build", "--release", "--out", str(dist)]
    run(maturin, cwd=ROOT, env=build_env, timeout=1500)
    wheels = sorted(dist.glob("r1kit-*.whl"))
    assert len(wheels) == 1, wheels
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    run([str(py), "-m", "pip", "install", "--quiet", str(wheels[0])], env=env, timeout=1500)
    probe = (
        "import r1kit, torch;"
        "assert torch.__version__.startswith('2.13.0'), torch.__version__;"
        "s = r1kit.NoiseSchedule(0.0, 0.5, 203);"
        "print(r1kit.__file__);"
        "print(round(s.probability(100), 3), int(s.draw_noisy(100, list(range(1000))).sum()))"
    )
    out = run([str(py), "-c", probe], env=env, cwd=tmp_path).stdout.split()
    assert out[0].startswith(str(venv)), out  # the installed copy, not the source tree
    assert out[1] == "0.163"
    assert 100 < int(out[2]) < 230
