"""Runs every Python benchmark in benches/ and prints medians and speed-up ratios.

Usage (from the repository root, inside the project's venv; `make bench` does this):

    python benches/run.py [--filter SUBSTRING] [--min-time SECONDS] [--threads N]

Ratios are baseline median / r1kit median: above 1 means r1kit is faster.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import r1kit  # noqa: E402
from benches.harness import Timing, bandwidth, format_ms, run_case  # noqa: E402


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, r1kit {r1kit.__version__}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filter", default="", help="only cases whose name contains this")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds per implementation")
    parser.add_argument("--min-runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="r1kit pool size (0: default)")
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="time the implementations of a case in rounds (one call each) instead of in turn",
    )
    parser.add_argument("--out", default=str(ROOT / "bench-results" / "python.json"))
    args = parser.parse_args()
    if args.threads:
        r1kit.set_num_threads(args.threads)

    print(f"machine: {machine()}; r1kit threads: {r1kit.get_num_threads()}")
    modules = sorted(p.stem for p in (ROOT / "benches").glob("bench_*.py"))
    results: list[Timing] = []
    limits: list[dict[str, object]] = []
    for name in modules:
        module = importlib.import_module(f"benches.{name}")
        for case in module.cases():
            if args.filter not in case.name:
                continue
            rows = run_case(
                case, min_runs=args.min_runs, min_time_s=args.min_time, interleave=args.interleave
            )
            results.extend(rows)
            ours = rows[0].median_s
            print(f"\n{case.name}")
            print(f"  {'implementation':<34} {'median ms':>10} {'runs':>6} {'r1kit speed-up':>15}")
            for row in rows:
                ratio = "" if row is rows[0] else f"{row.median_s / ours:.1f}x"
                print(
                    f"  {row.implementation:<34} {format_ms(row.median_s):>10} {row.runs:>6}"
                    f" {ratio:>15}"
                )
            bw = bandwidth(case, min_runs=args.min_runs, min_time_s=args.min_time)
            if bw is not None:
                limits.append({"case": case.name, **bw.__dict__})
                print(
                    f"  memory: moves {bw.traffic_mb:.0f} MB; copy bandwidth in this run "
                    f"{bw.clone_gb_s:.1f} GB/s (clone) / {bw.copy_gb_s:.1f} GB/s (copy_): "
                    f"{format_ms(bw.limit_s)} ms at the faster; r1kit at "
                    f"{bw.limit_s / ours:.0%} of that limit"
                )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": machine(),
                "results": [r.__dict__ for r in results],
                "memory_limits": limits,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
