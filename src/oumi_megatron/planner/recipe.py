"""A recipe seen by the planner: its full validation for a world size, its layout's memory
and estimated step time, and where that layout ranks among the planned ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from oumi_megatron.planner.architecture import load_architecture, shipped_config_dir
from oumi_megatron.planner.hardware import GiB, Hardware
from oumi_megatron.planner.memory import (
    Candidate,
    MemoryEstimate,
    Options,
    Workload,
    estimate_memory,
)


@dataclass(frozen=True)
class RecipeOutcome:
    fits: bool
    memory: MemoryEstimate
    rank: int | None
    """1-based place of the recipe's layout among the planned layouts (None: not listed)."""
    lines: list[str]


def model_config_dir(model: str) -> Path:
    """The shipped architecture for a shipped name or known Hub id, else ``model`` as a path."""
    return shipped_config_dir(model) or Path(model).expanduser()


def recipe_plan(
    recipe: str, overrides: list[str], gpus: int, hw: Hardware, model: str | None = None
) -> RecipeOutcome:
    """Raises ``ConfigError`` (every problem at once) when the recipe is not valid."""
    from oumi_megatron.config import ModelShape, load_config, validate_config
    from oumi_megatron.parallel.layout import ParallelLayout
    from oumi_megatron.parallel.pipeline_split import stage_layers
    from oumi_megatron.planner.search import engine_problem, plan

    cfg = load_config(recipe, overrides, check=False)
    model_dir = model_config_dir(model or cfg.model.model_name)
    validated = validate_config(cfg, gpus, ModelShape.from_model_dir(model_dir))
    arch = load_architecture(str(model_dir))
    m = cfg.megatron
    layout = ParallelLayout.from_params(m)
    cand = Candidate(
        tp=layout.tp, pp=layout.pp, cp=layout.cp, dp=validated.data_parallel_size,
        ep=layout.ep, etp=layout.etp or layout.tp, vpp=layout.vpp,
        stage_layers=tuple(stage_layers(arch.num_layers, layout.pp, layout.vpp, layout.split)),
        sp=layout.sp_size > 1,
    )  # fmt: skip
    work = recipe_workload(cfg, validated.global_batch_size)
    options = Options(
        distributed_optimizer=m.ddp_config.use_distributed_optimizer,
        full_recompute=m.transformer_config.recompute_granularity == "full",
        optimizer_offload=(
            m.optimizer_config.optimizer_offload_fraction
            if m.optimizer_config.optimizer_cpu_offload
            else 0.0
        ),
    )
    memory = estimate_memory(arch, cand, work, options, hw.memory_bytes)
    planned = plan(arch, gpus, hw, work)
    labels = [r.candidate.label() for r in planned.valid]
    rank = labels.index(cand.label()) + 1 if cand.label() in labels else None
    fits = memory.fits(hw.memory_bytes)
    parts = ", ".join(f"{k} {v:.1f}" for k, v in memory.breakdown().items() if v)
    lines = [
        f"{recipe}: valid for {gpus} GPUs ({cand.label()}, DP{cand.dp}, "
        f"{validated.num_microbatches} micro-batch(es) per optimizer step per rank)",
        f"  model {arch.describe()}",
        f"  memory per GPU: {memory.peak / GiB:.1f} GiB of {hw.memory_gib:.0f} "
        f"({memory.phase} phase, pipeline rank {memory.rank}): "
        + ("fits" if fits else "DOES NOT FIT"),
        f"  GiB: {parts}",
        f"  memory savers: {options.describe()}",
    ]
    if not memory.engine_fits:
        lines.append(f"  DOES NOT FIT: {engine_problem(memory, work)}")
    if rank is not None:
        lines.append(f"  layout ranks {rank} of {len(labels)} planned layouts for {gpus} GPUs "
                     f"(best: {labels[0]}; `oumi-megatron plan --model {arch.name} --gpus {gpus}`)")  # fmt: skip
    return RecipeOutcome(fits, memory, rank, lines)


def recipe_workload(cfg, global_batch: int) -> Workload:
    """The planner's workload from a recipe: sequences of prompt + completion tokens."""
    m, grpo = cfg.megatron, cfg.grpo
    seq_len = grpo.max_prompt_length + grpo.max_completion_length
    budget = None
    if m.enable_sequence_packing:
        budget = m.max_tokens_per_microbatch or m.micro_batch_size * seq_len
    colocated = m.inference_backend in ("vllm", "auto") and m.weight_sync_method in (
        "auto",
        "inprocess",
    )
    return Workload(
        seq_len=seq_len,
        micro_batch=m.micro_batch_size,
        tokens_per_microbatch=budget,
        global_batch=global_batch,
        param_bytes=4 if m.transformer_config.params_dtype == "fp32" else 2,
        grad_reduce_in_fp32=m.ddp_config.grad_reduce_in_fp32,
        reference_model=grpo.beta > 0 or grpo.kl_in_reward_coef > 0,
        rollout_share=m.vllm_gpu_memory_utilization if colocated else 0.0,
        rollout_sleeps=m.vllm_sleep,
        rollout_tp=m.rollout_tensor_parallel_size,
    )
