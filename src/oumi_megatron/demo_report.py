"""Did the demo learn? `python -m oumi_megatron.demo_report OUTPUT_DIR [--threshold 0.3]`.

Passes when the mean reward of the last 10 steps is at least twice that of the first 10 and
above the threshold, and the run exported `hf_model/` and saved `reward_curve.png`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from oumi_megatron.plotting import read_metrics

WINDOW = 10


def evaluate(output_dir: Path, threshold: float) -> tuple[bool, str]:
    rows = read_metrics(output_dir / "metrics.jsonl")
    rewards = [r["reward/mean"] for r in rows]
    first = statistics.fmean(rewards[:WINDOW])
    last = statistics.fmean(rewards[-WINDOW:])
    checks = {
        f"last {WINDOW} steps ≥ 2× first {WINDOW}": last >= 2 * first,
        f"last {WINDOW} steps > {threshold}": last > threshold,
        "hf_model/ exported": (output_dir / "hf_model" / "config.json").exists(),
        "reward_curve.png saved": (output_dir / "reward_curve.png").exists(),
    }
    lines = [f"steps {len(rows)}: mean reward first {WINDOW} = {first:.3f}, last {WINDOW} = {last:.3f} "
             f"({last / max(first, 1e-9):.1f}×)"]  # fmt: skip
    lines += [f"  [{'ok' if ok else 'FAIL'}] {name}" for name, ok in checks.items()]
    return all(checks.values()), "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--threshold", type=float, default=0.3)
    args = parser.parse_args()
    ok, report = evaluate(args.output_dir, args.threshold)
    print(report)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
