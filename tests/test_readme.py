"""The README's Python examples run, and print what their comments say."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict[str, object] = {}
    for block in blocks:  # one session, block after block, as a reader would type them
        exec(compile(block, str(README), "exec"), namespace)
    noisy = namespace["noisy"]
    assert isinstance(noisy, torch.Tensor) and noisy.tolist() == [False, True]
    schedule = namespace["schedule"]
    assert round(schedule.probability(100), 4) == 0.1633  # type: ignore[attr-defined]
    advantages = namespace["advantages"]
    assert isinstance(advantages, torch.Tensor)
    torch.testing.assert_close(
        advantages[:2, 0], torch.tensor([0.7071, -0.7071]), atol=1e-4, rtol=0
    )
    qa, math = namespace["qa"], namespace["math"]
    assert isinstance(qa, torch.Tensor) and qa.tolist() == [1.0, 0.0]
    assert isinstance(math, torch.Tensor) and math.tolist() == [1.0, 0.0]
    step9 = namespace["step9"]
    assert isinstance(step9, torch.Tensor)
    torch.testing.assert_close(step9, torch.tensor([1.2, 1.0, -1.0]))
