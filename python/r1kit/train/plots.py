"""PNG plots of a run's curves (matplotlib, headless).

Example:
    >>> import tempfile, os
    >>> rows = [{"stage": "s1", "step": i, "loss": 1.0 / i} for i in range(1, 5)]
    >>> path = os.path.join(tempfile.mkdtemp(), "curves.png")
    >>> plot_metrics(rows, path)
    True
    >>> open(path, "rb").read(4)
    b'\\x89PNG'
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["CURVES", "plot_metrics"]

CURVES = (
    "loss",
    "reward",
    "accuracy",
    "parallel_ratio",
    "noise_probability",
    "searches_per_sample",
    "response_tokens",
    "kl",
)
"""The metrics plotted, one panel each (those no row has are left out), every stage as its own
line over the global step."""


def plot_metrics(rows: Sequence[dict[str, Any]], path: str | Path) -> bool:
    """Draws the step rows of ``metrics.jsonl`` (rows without ``step`` are skipped) to a PNG.

    Args:
        rows: Metric rows (``stage``, ``step`` and any of :data:`CURVES`).
        path: The PNG file to write.

    Returns:
        False (and nothing written) when matplotlib is not installed, else True.
    """
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:
        return False
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    steps = [r for r in rows if "step" in r]
    keys = [k for k in CURVES if any(r.get(k) is not None for r in steps)]
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(3.2 * max(len(keys), 1), 2.8))
    axes = [axes] if len(keys) <= 1 else list(axes)
    stages = list(dict.fromkeys(r["stage"] for r in steps))
    for ax, key in zip(axes, keys, strict=False):
        offset = 0
        for color, stage in enumerate(stages):
            mine = [r for r in steps if r["stage"] == stage]
            xs = [offset + r["step"] for r in mine if r.get(key) is not None]
            ys = [r[key] for r in mine if r.get(key) is not None]
            if xs:
                ax.plot(xs, ys, label=stage, linewidth=1, color=f"C{color}")
            offset += len(mine)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    if keys:
        axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
