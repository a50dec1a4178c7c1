"""Enumerate TP/PP/VPP/CP/EP/DP layouts for N GPUs, keep the valid ones that fit, rank them.

Validity uses the same rules as the config validation (``parallel.layout_rules``), so a
layout listed here is one ``oumi-megatron train`` accepts; a rejected layout carries the
message that validation would print. Where layers do not divide over the pipeline stages,
the layout is kept with the uneven split Megatron supports (``pipeline_split``). Memory
savers are tried cheapest first (distributed optimizer, then full recompute, then
optimizer CPU offload, then both); a layout that fits with none of them is rejected.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import SimpleNamespace

from oumi_megatron.parallel.layout_rules import (
    LayoutError,
    check_experts,
    check_global_batch,
    check_model_split,
)
from oumi_megatron.parallel.pipeline_split import PipelineSplit, propose_split
from oumi_megatron.planner.architecture import Architecture
from oumi_megatron.planner.cost import StepCost, estimate_step
from oumi_megatron.planner.hardware import GiB, Hardware
from oumi_megatron.planner.memory import (
    Candidate,
    MemoryEstimate,
    Options,
    Workload,
    estimate_memory,
)

EVEN = PipelineSplit()
OPTION_LADDER = (
    Options(),
    Options(full_recompute=True),
    Options(optimizer_offload=1.0),
    Options(full_recompute=True, optimizer_offload=1.0),
)


@dataclass(frozen=True)
class Ranked:
    candidate: Candidate
    options: Options
    memory: MemoryEstimate
    cost: StepCost
    split: PipelineSplit


@dataclass(frozen=True)
class Rejected:
    label: str
    reason: str


@dataclass(frozen=True)
class Plan:
    arch: Architecture
    gpus: int
    hardware: Hardware
    workload: Workload
    valid: list[Ranked]
    rejected: list[Rejected]


def engine_problem(estimate: MemoryEstimate, work: Workload) -> str:
    return (
        f"the colocated rollout engine needs {estimate.engine_weights / GiB:.1f} GiB per GPU "
        f"for the weights (rollout TP {work.rollout_tp}) but gets "
        f"{estimate.engine_awake / GiB:.1f} GiB ({work.rollout_share:.0%} of GPU memory)"
    )


def rollout_tp_for(arch: Architecture, hw: Hardware, share: float) -> int:
    """The fewest GPUs per rollout engine (a power of two within a node) that hold the bf16
    weights in 90% of the engine's share; the node size when none does."""
    for tp in _powers_of_two(hw.gpus_per_node):
        if arch.total_params * 2 / tp <= 0.9 * share * hw.memory_bytes:
            return tp
    return hw.gpus_per_node


def megatron_params(cand: Candidate, split: PipelineSplit = EVEN):
    """An object with ``MegatronParams``' field names for ``cand``, for the shared layout
    rules."""
    return SimpleNamespace(
        tensor_model_parallel_size=cand.tp,
        pipeline_model_parallel_size=cand.pp,
        virtual_pipeline_model_parallel_size=cand.vpp,
        context_parallel_size=cand.cp,
        expert_model_parallel_size=cand.ep,
        expert_tensor_parallel_size=None,
        sequence_parallel=cand.sp,
        transformer_config=SimpleNamespace(
            recompute_num_layers=None,
            num_layers_in_first_pipeline_stage=split.first_stage_layers,
            num_layers_in_last_pipeline_stage=split.last_stage_layers,
            account_for_embedding_in_pipeline_split=split.embedding_in_split,
            account_for_loss_in_pipeline_split=split.loss_in_split,
        ),
    )


def _powers_of_two(limit: int) -> list[int]:
    return [2**i for i in range(limit.bit_length()) if 2**i <= limit]


def _layouts(arch: Architecture, gpus: int, hw: Hardware):
    """(tp, pp, vpp, cp, ep) tuples whose TP × PP × CP divides the GPUs."""
    tps = [t for t in _powers_of_two(2 * hw.gpus_per_node) if gpus % t == 0]
    eps = [1]
    if arch.num_experts:
        eps = [e for e in _powers_of_two(min(gpus, arch.num_experts)) if e > 0]
    for tp in tps:
        for pp in range(1, min(gpus // tp, arch.num_layers) + 1):
            for cp in (c for c in _powers_of_two(gpus // (tp * pp)) if c <= 16):
                if gpus % (tp * pp * cp):
                    continue
                for vpp in [None] + ([2, 4] if pp > 2 else []):
                    for ep in eps:
                        yield tp, pp, vpp, cp, ep


def plan(arch: Architecture, gpus: int, hw: Hardware, work: Workload) -> Plan:
    valid, rejected = [], []
    for tp, pp, vpp, cp, ep in _layouts(arch, gpus, hw):
        dp = gpus // (tp * pp * cp)
        # Sequence parallelism wherever there is TP: the same traffic, less activation memory.
        cand = Candidate(tp=tp, pp=pp, cp=cp, dp=dp, ep=ep, vpp=vpp, sp=tp > 1)
        outcome = _evaluate(arch, cand, gpus, hw, work)
        (valid if isinstance(outcome, Ranked) else rejected).append(outcome)
    valid.sort(key=lambda r: (r.cost.total, r.candidate.tp * r.candidate.pp * r.candidate.cp))
    return Plan(arch, gpus, hw, work, valid, rejected)


def _evaluate(
    arch: Architecture, cand: Candidate, gpus: int, hw: Hardware, work: Workload
) -> Ranked | Rejected:
    label = cand.label()
    if cand.tp > hw.gpus_per_node:
        return Rejected(
            label,
            f"tensor parallelism ({cand.tp}) spans nodes ({hw.gpus_per_node} GPUs per node): "
            f"its all-reduces would cross the inter-node network",
        )
    split = PipelineSplit()
    try:
        check_experts(megatron_params(cand), gpus, arch)
        try:
            layers = check_model_split(megatron_params(cand), arch)
        except LayoutError:
            split = propose_split(arch.num_layers, cand.pp, cand.vpp) or PipelineSplit()
            if split.is_even:
                raise
            params = megatron_params(cand, split)
            layers = check_model_split(params, arch)
        check_global_batch(work.global_batch, work.micro_batch, cand.dp)
    except LayoutError as error:
        return Rejected(label, str(error).split(" Fix:")[0])
    note = "" if split.is_even else split.describe()
    cand = replace(cand, stage_layers=tuple(layers), split_note=note)
    if work.seq_len % (2 * cand.cp) and cand.cp > 1:
        return Rejected(label, f"seq_len ({work.seq_len}) is not a multiple of 2 × CP")
    estimate = None
    for options in OPTION_LADDER:
        estimate = estimate_memory(arch, cand, work, options, hw.memory_bytes)
        if not estimate.engine_fits:
            return Rejected(label, engine_problem(estimate, work))
        if estimate.fits(hw.memory_bytes):
            cost = estimate_step(arch, cand, work, options, hw)
            return Ranked(cand, options, estimate, cost, split)
    assert estimate is not None
    return Rejected(
        label,
        f"needs {estimate.peak / GiB:.1f} GiB per GPU ({estimate.phase} phase, pipeline rank "
        f"{estimate.rank}) > {hw.memory_gib:.0f} GiB even with full recompute and the "
        f"optimizer on the CPU",
    )
