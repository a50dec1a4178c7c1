"""What rank 0 prints at the start (the resolved layout) and at the end (the run) of training."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LayoutFacts:
    """The numbers of a run's layout and batch arithmetic."""

    world_size: int
    layout: str  # e.g. "TP2 PP1" (ParallelLayout's str)
    data_parallel_size: int
    device: str
    parameters_rank0: int
    rollout: str  # RolloutTopology.describe()
    engine: str
    weight_sync: str
    prompts_per_step: int
    num_generations: int
    global_batch_size: int
    micro_batch_size: int
    microbatches_per_rank: int
    optimizer_steps_per_step: int
    packing: str
    steps: int
    steps_from: str


def layout_lines(f: LayoutFacts) -> list[str]:
    sequences = f.prompts_per_step * f.num_generations
    return [
        f"layout: {f.world_size} process(es) on {f.device}: {f.layout}×DP{f.data_parallel_size}"
        f"; {f.parameters_rank0 / 1e6:.2f} M parameters on rank 0",
        f"rollout: {f.rollout}; engine {f.engine}, weight sync {f.weight_sync}",
        f"batch: {f.prompts_per_step} prompts × {f.num_generations} generations = {sequences} "
        f"sequences per step = {f.optimizer_steps_per_step} optimizer step(s) of "
        f"{f.global_batch_size} (micro batch {f.micro_batch_size} × DP{f.data_parallel_size} × "
        f"{f.microbatches_per_rank} per rank); {f.packing}",
        f"steps: {f.steps} ({f.steps_from})",
    ]


def _mean(rows: Sequence[Mapping[str, float]], key: str) -> float:
    values = [r[key] for r in rows if key in r]
    return statistics.fmean(values) if values else float("nan")


def run_lines(
    rows: Sequence[Mapping[str, float]], seconds: float, outputs: Sequence[Path]
) -> list[str]:
    """Steps, time per phase (mean per step), reward first/last (10 steps each), outputs."""
    if not rows:
        return [f"run: no step trained ({seconds:.1f} s)"]
    phases = sorted({k for r in rows for k in r if k.startswith("time/") and k != "time/step"})
    per_phase = ", ".join(f"{p.removeprefix('time/')} {_mean(rows, p):.3f}" for p in phases)
    window = min(10, len(rows))
    first, last = _mean(rows[:window], "reward/mean"), _mean(rows[-window:], "reward/mean")
    present = [str(p) for p in outputs if p.exists()]
    return [
        f"run: {len(rows)} step(s) in {seconds:.1f} s, {_mean(rows, 'time/step'):.3f} s/step "
        f"({per_phase} s per step)",
        f"reward/mean: first {window} step(s) {first:.4f}, last {window} {last:.4f}",
        f"outputs: {', '.join(present) if present else 'none'}",
    ]
