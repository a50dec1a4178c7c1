"""Reward curve of a run, from its metrics.jsonl (matplotlib, headless)."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(metrics_jsonl: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line]


def moving_average(values: list[float], window: int = 10) -> list[float]:
    """Mean of each value and the up to ``window - 1`` values before it (shorter at the start)."""
    return [
        sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
        for i in range(len(values))
    ]


def plot_reward_curve(metrics_jsonl: str | Path, out_png: str | Path, window: int = 10) -> Path:
    """Per-step mean reward and its moving average, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_metrics(metrics_jsonl) if r.get("reward/mean") is not None]
    steps = [r["step"] for r in rows]
    rewards = [r["reward/mean"] for r in rows]
    smooth = moving_average(rewards, window)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, rewards, alpha=0.35, label="reward/mean")
    ax.plot(steps, smooth, label=f"moving average ({window} steps)")
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.set_title("GRPO reward")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return Path(out_png)
