"""The metrics of one GRPO step: rewards, lengths, loss terms, timings, throughput."""

from __future__ import annotations

import statistics

import torch

from oumi_megatron.metrics import (
    effective_seq_len,
    estimate_flops_per_token,
    peak_flops_for_device,
    throughput_metrics,
)


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


def step_metrics(rollouts, scored, update: dict, timings: dict, provider) -> dict[str, float]:
    lengths = [len(c) for c in rollouts.completion_ids]
    metrics = dict(scored.metrics)
    # Full marks: every reward function at its maximum (rewards are in [0, 1] per function).
    top = max(scored.rewards) if scored.rewards else 0.0
    metrics["reward/accuracy"] = (
        statistics.fmean(r >= 1.0 - 1e-6 for r in scored.rewards) if top else 0.0
    )
    metrics["response_length/mean"] = statistics.fmean(lengths)
    metrics["response_length/max"] = float(max(lengths))
    metrics["response_length/truncated_frac"] = statistics.fmean(
        f == "length" for f in rollouts.finish_reasons
    )
    metrics.update(update)
    metrics.update(timings)
    sequence_lengths = [
        len(p) + len(c) for p, c in zip(rollouts.prompt_ids, rollouts.completion_ids, strict=True)
    ]
    flops = _flops_per_token(provider, effective_seq_len(sequence_lengths))
    num_devices = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    peak = peak_flops_for_device() if torch.cuda.is_available() else None
    metrics.update(
        throughput_metrics(rollouts.num_tokens, timings["time/step"], flops, peak, num_devices)
    )
    return metrics
