"""Megatron-Core's rules for a parallel layout, checked before any process starts.

Megatron asserts these deep inside ``initialize_model_parallel`` / ``TransformerConfig``;
here each broken rule is a ``LayoutError`` naming the fields and a fix. Light on purpose (no
Oumi, Megatron or transformers import): the config validation (``config.layout_checks``)
and the layout planner (``planner``) share them. ``m`` is anything with ``MegatronParams``'
field names and ``shape`` anything with ``ModelShape``'s.
"""

from __future__ import annotations

import os
from typing import Any

from oumi_megatron.parallel.layout import ParallelLayout
from oumi_megatron.parallel.pipeline_split import PipelineSplitError, propose_split, stage_layers


class LayoutError(ValueError):
    """A layout Megatron would refuse; the message names the fields and a fix."""


def divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def check_experts(m: Any, world_size: int, shape: Any) -> int:
    """Expert parallelism fits the model and the world. Returns the expert data-parallel size."""
    ep = m.expert_model_parallel_size
    etp = m.expert_tensor_parallel_size or m.tensor_model_parallel_size
    pp = m.pipeline_model_parallel_size
    if shape.num_experts is None:
        if ep > 1:
            raise LayoutError(
                f"megatron.expert_model_parallel_size ({ep}) > 1 but the model is dense (no "
                f"experts). Fix: set megatron.expert_model_parallel_size: 1."
            )
    elif shape.num_experts % ep != 0:
        raise LayoutError(
            f"The model's number of experts ({shape.num_experts}) must be divisible by "
            f"megatron.expert_model_parallel_size ({ep}). Fix: use one of "
            f"{divisors(shape.num_experts)}."
        )
    tp = m.tensor_model_parallel_size
    if shape.num_experts is not None and tp > 1 and not m.sequence_parallel:
        raise LayoutError(
            f"megatron.tensor_model_parallel_size ({tp}) > 1 with a mixture-of-experts model "
            f"needs megatron.sequence_parallel: true (Megatron trains MoE layers under tensor "
            f"parallelism only with sequence parallelism). Fix: set megatron.sequence_parallel: "
            f"true, or set megatron.tensor_model_parallel_size: 1 and split the experts with "
            f"megatron.expert_model_parallel_size (and expert_tensor_parallel_size)."
        )
    if getattr(shape, "expert_biases", False) and etp > 1:
        raise LayoutError(
            f"megatron.expert_tensor_parallel_size ({etp}) > 1 with a model whose experts have "
            f"biases (GPT-OSS): Megatron supports expert biases only when each expert stays "
            f"whole. Fix: set megatron.expert_tensor_parallel_size: 1 (split the experts with "
            f"megatron.expert_model_parallel_size)."
        )
    expert_grid = etp * ep * pp
    if world_size % expert_grid != 0:
        raise LayoutError(
            f"world_size ({world_size}) must be divisible by expert_tensor_parallel_size "
            f"({etp}) × expert_model_parallel_size ({ep}) × pipeline_model_parallel_size "
            f"({pp}) = {expert_grid} (Megatron's expert layout; expert_tensor_parallel_size "
            f"defaults to tensor_model_parallel_size). Fix: change megatron."
            f"expert_model_parallel_size / expert_tensor_parallel_size, or launch a multiple "
            f"of {expert_grid} ranks."
        )
    return world_size // expert_grid


def check_model_split(m: Any, shape: Any) -> list[int]:
    """Whole heads per tensor-parallel rank and a valid pipeline split. Returns the layers on
    each pipeline rank."""
    tp = m.tensor_model_parallel_size
    for count, what in (
        (shape.num_attention_heads, "attention heads"),
        (shape.num_kv_heads, "key/value heads"),
    ):
        if count % tp != 0:
            raise LayoutError(
                f"The model's {what} ({count}) must be divisible by "
                f"megatron.tensor_model_parallel_size ({tp}): each tensor-parallel rank holds "
                f"whole heads. Fix: use a tensor_model_parallel_size in {divisors(count)}."
            )
    return check_pipeline_split(m, shape)


def check_pipeline_split(m: Any, shape: Any) -> list[int]:
    """Megatron's pipeline split rules (``pipeline_split.stage_layers``) and recompute units
    that fit a stage. Returns the layers on each pipeline rank."""
    layout = ParallelLayout.from_params(m)
    try:
        per_rank = stage_layers(shape.num_layers, layout.pp, layout.vpp, layout.split)
    except PipelineSplitError as error:
        sizes = f"pipeline_model_parallel_size ({layout.pp})"
        if layout.vpp is not None:
            sizes += f", virtual_pipeline_model_parallel_size ({layout.vpp})"
        proposal = propose_split(shape.num_layers, layout.pp, layout.vpp)
        if proposal is not None:
            fix = "set megatron.transformer_config " + ", ".join(
                f"{k}: {str(v).lower()}" for k, v in proposal.set_fields().items()
            )
        else:
            fix = f"use pipeline sizes whose product divides {shape.num_layers}"
        hint = "" if layout.split.is_even else f" with {layout.split.describe()}"
        raise LayoutError(
            f"The model's {shape.num_layers} layers cannot be split over {sizes}{hint}: "
            f"{error}. Fix: {fix} (oumi-megatron plan lists valid layouts)."
        ) from None
    recompute = m.transformer_config.recompute_num_layers
    chunks = layout.vpp if layout.vpp is not None and layout.pp > 1 else 1
    per_chunk = min(per_rank) // chunks
    if recompute is not None and recompute > per_chunk:
        raise LayoutError(
            f"megatron.transformer_config.recompute_num_layers ({recompute}) exceeds the "
            f"layers per pipeline stage ({per_chunk}). Fix: set it to at most {per_chunk}."
        )
    return per_rank


def check_global_batch(global_batch: int, micro: int, dp: int) -> int:
    """Whole micro-batches on every data-parallel rank. Returns micro-batches per rank."""
    per_pass = micro * dp
    if global_batch % per_pass != 0:
        suggestion = per_pass * max(1, global_batch // per_pass)
        raise LayoutError(
            f"megatron.global_batch_size ({global_batch}) must be divisible by "
            f"megatron.micro_batch_size ({micro}) × data-parallel size ({dp}) = {per_pass}. "
            f"Fix: use a multiple of {per_pass}, e.g. {suggestion}."
        )
    return global_batch // per_pass


def check_rollout_replicas(m: Any, world_size: int, per_node: int | None = None) -> None:
    """Replicas of ``rollout_tensor_parallel_size`` consecutive ranks, each within one node
    (``per_node`` defaults to torchrun's LOCAL_WORLD_SIZE)."""
    size = m.rollout_tensor_parallel_size
    if per_node is None:
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    if world_size % size or per_node % size:
        raise LayoutError(
            f"megatron.rollout_tensor_parallel_size ({size}) must divide the processes per "
            f"node ({per_node}) and the world size ({world_size}): a rollout replica is that "
            f"many consecutive ranks of one node. Fix: use one of {divisors(per_node)}."
        )
