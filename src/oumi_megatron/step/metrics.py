"""The metrics of one GRPO step, reduced over every replica: rewards, lengths, loss terms,
exchange volume, timings, throughput.

Each replica leader tallies sums, maxima and minima of its own samples; every other rank
tallies nothing (the reductions' identities); one all-reduce per operation gives global values,
identical on every rank. The key set depends only on the config, so it is the same everywhere.
Tally keys without a "/" are intermediate sums; keys with one are metric names, kept as reduced.
"""

from __future__ import annotations

import math

import torch

from oumi_megatron.metrics import (
    estimate_flops_per_token,
    peak_flops_for_device,
    throughput_metrics,
)
from oumi_megatron.rewards.scoring import metric_name
from oumi_megatron.step.reward import ScoredBatch
from oumi_megatron.step.rollout import MALFORMED, RolloutBatch
from oumi_megatron.training.metric_reduce import all_reduce_metrics

FULL_MARKS = 1.0 - 1e-6


def rollout_tally(
    rollouts: RolloutBatch,
    scored: ScoredBatch,
    reward_names: list[str],
    accuracy_name: str,
    overlong_buffer: bool = False,
) -> dict[str, tuple[str, float]]:
    """This rank's contributions, ``name -> (op, value)``; empty batches give identities.
    ``overlong_buffer``: the rewards hold DAPO's overlong penalty (same on every rank)."""
    result = scored.result
    rewards = scored.rewards
    malformed = sum(f == MALFORMED for f in rollouts.finish_reasons)  # emptied: not "empty"
    tally: dict[str, tuple[str, float]] = {
        "n": ("sum", float(len(rewards))),
        "reward_sum": ("sum", math.fsum(rewards)),
        "reward_sq": ("sum", math.fsum(r * r for r in rewards)),
        "reward_max": ("max", max(rewards, default=-math.inf)),
        "reward_min": ("min", min(rewards, default=math.inf)),
        "failures": ("sum", float(sum(result.failures.values())) if result else 0.0),
        "none": ("sum", float(sum(result.nones.values())) if result else 0.0),
        "zero_std_groups": ("sum", float(scored.num_zero_std_groups)),
        "abs_adv": ("sum", math.fsum(abs(a) for a in scored.advantages)),
        "length_sum": ("sum", float(rollouts.num_completion_tokens)),
        "length_max": ("max", float(max(map(len, rollouts.completion_ids), default=0))),
        "truncated": ("sum", float(sum(f == "length" for f in rollouts.finish_reasons))),
        "empty": ("sum", float(sum(not c for c in rollouts.completion_ids) - malformed)),
        "malformed": ("sum", float(malformed)),
        "tokens": ("sum", float(rollouts.num_tokens)),
        "seq_len_sq": (
            "sum",
            float(
                sum(
                    (len(p) + len(c)) ** 2
                    for p, c in zip(rollouts.prompt_ids, rollouts.completion_ids, strict=True)
                )
            ),
        ),  # fmt: skip
    }
    per_function = result.per_function if result else {}
    for name in reward_names:
        values = per_function.get(name, [])
        key = f"fn/{metric_name(name)}"
        tally[f"{key}/sum"] = ("sum", math.fsum(values))
        tally[f"{key}/failures"] = ("sum", float(result.failures[name]) if result else 0.0)
        tally[f"{key}/none"] = ("sum", float(result.nones[name]) if result else 0.0)
        tally[f"{key}/seconds"] = ("max", result.seconds.get(name, 0.0) if result else 0.0)
    if overlong_buffer:
        tally["overlong_penalty"] = ("sum", math.fsum(scored.overlong_penalties))
        tally["overlong_penalized"] = ("sum", float(sum(p < 0 for p in scored.overlong_penalties)))
    accuracy = per_function.get(accuracy_name, [])
    tally["correct"] = ("sum", float(sum(v >= FULL_MARKS for v in accuracy)))
    return tally


def reduce_tally(tally: dict[str, tuple[str, float]], num_generations: int) -> dict[str, float]:
    """Global rollout and reward metrics from every rank's tally (collective)."""
    totals = all_reduce_metrics({k: v for k, (_, v) in tally.items()},
                                {k: op for k, (op, _) in tally.items()})  # fmt: skip
    n = max(totals["n"], 1.0)
    mean = totals["reward_sum"] / n
    metrics = {
        "reward/mean": mean,
        "reward/std": math.sqrt(max(totals["reward_sq"] / n - mean * mean, 0.0)),
        "reward/min": totals["reward_min"],
        "reward/max": totals["reward_max"],
        "reward/failures": totals["failures"],
        "reward/none": totals["none"],
        "reward/accuracy": totals["correct"] / n,
        "advantages/frac_zero_std_groups": totals["zero_std_groups"]
        / max(totals["n"] / num_generations, 1.0),
        "advantages/abs_mean": totals["abs_adv"] / n,
        "response_length/mean": totals["length_sum"] / n,
        "response_length/max": totals["length_max"],
        "response_length/truncated_frac": totals["truncated"] / n,
        "response_length/empty_frac": totals["empty"] / n,
        "response_length/malformed_frac": totals["malformed"] / n,
    }
    if "overlong_penalty" in totals:
        metrics["reward/overlong_penalty_mean"] = totals["overlong_penalty"] / n
        metrics["reward/overlong_penalized_frac"] = totals["overlong_penalized"] / n
    for key, value in totals.items():
        if key.startswith("fn/"):
            _, name, what = key.split("/")
            metrics[f"reward/{name}/{what if what != 'sum' else 'mean'}"] = (
                value / n if what == "sum" else value
            )
            if what == "failures":
                metrics[f"reward/{name}/failure_frac"] = value / n
        elif "/" in key:  # already a metric name (exchange/*, rollout/*)
            metrics[key] = value
    metrics["_tokens"] = totals["tokens"]
    metrics["_effective_seq_len"] = totals["seq_len_sq"] / max(totals["tokens"], 1.0)
    return metrics


def _flops_per_token(provider, seq_len: float) -> float:
    return estimate_flops_per_token(
        num_layers=provider.num_layers,
        hidden_size=provider.hidden_size,
        ffn_hidden_size=provider.moe_ffn_hidden_size
        if provider.num_moe_experts
        else provider.ffn_hidden_size,
        num_attention_heads=provider.num_attention_heads,
        num_kv_heads=provider.num_query_groups or provider.num_attention_heads,
        vocab_size=provider.vocab_size,
        seq_len=seq_len,
        gated_mlp=bool(provider.gated_linear_unit),
        num_experts=provider.num_moe_experts,
        moe_top_k=provider.moe_router_topk if provider.num_moe_experts else None,
        kv_channels=provider.kv_channels,
    )


def step_metrics(rollout: dict, update: dict, timings: dict, provider) -> dict[str, float]:
    """One row of metrics.jsonl from the reduced rollout metrics, the update and timings."""
    metrics = {k: v for k, v in rollout.items() if not k.startswith("_")}
    metrics.update(update)
    metrics.update(timings)
    flops = _flops_per_token(provider, rollout["_effective_seq_len"])
    num_devices = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    peak = peak_flops_for_device() if torch.cuda.is_available() else None
    metrics.update(
        throughput_metrics(rollout["_tokens"], timings["time/step"], flops, peak, num_devices)
    )
    return metrics
