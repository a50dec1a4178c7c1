"""A plan as text: ranked layouts, rejected ones with their reasons, the best layout's
memory (with and without each saver) and its ``megatron:`` YAML."""

from __future__ import annotations

from dataclasses import replace

from oumi_megatron.planner.hardware import GiB
from oumi_megatron.planner.memory import estimate_memory
from oumi_megatron.planner.search import Plan, Ranked


def render(plan: Plan, top: int = 10, show_rejected: int = 12) -> str:
    lines = _header(plan)
    if plan.valid:
        lines += ["", _table(plan.valid[:top])]
        if len(plan.valid) > top:
            lines.append(f"  ... {len(plan.valid) - top} more valid layouts (--top to see them)")
    else:
        lines += ["", "No layout fits: see the reasons below."]
    lines += ["", f"Rejected: {len(plan.rejected)} layouts", *_rejected(plan, show_rejected)]
    if plan.valid:
        lines += ["", *memory_lines(plan, plan.valid[0]), "", *yaml_lines(plan, plan.valid[0])]
    return "\n".join(lines)


def _rejected(plan: Plan, show: int) -> list[str]:
    """One line per distinct reason, naming its layouts (rules first, then memory)."""
    by_reason: dict[str, list[str]] = {}
    for rejected in plan.rejected:
        by_reason.setdefault(rejected.reason, []).append(rejected.label)
    reasons = sorted(by_reason, key=lambda reason: reason.startswith("needs "))
    lines = []
    for reason in reasons[:show]:
        labels = by_reason[reason]
        named = ", ".join(labels[:4]) + (f" and {len(labels) - 4} more" if len(labels) > 4 else "")
        lines.append(f"  {named}: {reason}")
    if len(reasons) > show:
        lines.append(f"  ... {len(reasons) - show} more reasons (--show-rejected N)")
    return lines


def _header(plan: Plan) -> list[str]:
    hw, work = plan.hardware, plan.workload
    nodes = -(-plan.gpus // hw.gpus_per_node)
    rollout = (
        f"colocated rollout engines of {work.rollout_tp} GPU(s): {work.rollout_share:.0%} of "
        f"GPU memory while generating"
        if work.rollout_share
        else "no colocated rollout engine"
    )
    return [
        f"Model {plan.arch.describe()}",
        f"{plan.gpus} GPUs ({nodes} node(s) × {hw.gpus_per_node} {hw.name}, "
        f"{hw.memory_gib:.0f} GiB each); sequences of {work.seq_len} tokens, micro batch "
        f"{work.micro_batch}, {work.global_batch} sequences per optimizer step; {rollout}"
        + ("; reference model for the KL" if work.reference_model else ""),
    ]


def _table(ranked: list[Ranked]) -> str:
    rows = [("#", "layout", "DP", "memory savers", "GiB/GPU", "phase", "est. step s", "comm",
             "bubble", "pipeline split")]  # fmt: skip
    for i, r in enumerate(ranked, 1):
        cost = r.cost
        rows.append((
            str(i), r.candidate.label(), str(r.candidate.dp), r.options.describe(),
            f"{r.memory.peak / GiB:.1f}", r.memory.phase, f"{cost.total:.2f}",
            f"{cost.communication / cost.total:.0%}", f"{cost.bubble / cost.total:.0%}",
            r.candidate.split_note or "even",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def memory_lines(plan: Plan, best: Ranked) -> list[str]:
    """The best layout's memory per component and with each saver switched."""
    m = best.memory
    parts = ", ".join(f"{k} {v:.1f}" for k, v in m.breakdown().items() if v)
    lines = [
        f"Best: {best.candidate.label()} with {best.options.describe()}: "
        f"{m.peak / GiB:.1f} GiB on pipeline rank {m.rank} ({m.phase} phase)",
        f"  GiB per GPU: {parts}",
        "  the same layout with other memory savers (GiB per GPU, worst rank):",
    ]
    variants = {
        "no distributed optimizer": replace(best.options, distributed_optimizer=False),
        "distributed optimizer": replace(best.options, distributed_optimizer=True),
        "no recompute": replace(best.options, full_recompute=False),
        "full recompute": replace(best.options, full_recompute=True),
        "optimizer on GPU": replace(best.options, optimizer_offload=0.0),
        "optimizer CPU offload": replace(best.options, optimizer_offload=1.0),
    }
    for name, options in variants.items():
        if options == best.options:
            continue
        peak = estimate_memory(plan.arch, best.candidate, plan.workload, options,
                               plan.hardware.memory_bytes).peak  # fmt: skip
        verdict = "fits" if peak <= plan.hardware.memory_bytes else "does not fit"
        lines.append(f"    {name}: {peak / GiB:.1f} ({verdict})")
    return lines


def yaml_lines(plan: Plan, best: Ranked) -> list[str]:
    """``megatron:`` settings of the best layout, ready to paste into a recipe."""
    c, o = best.candidate, best.options
    lines = [
        "megatron:",
        f"  tensor_model_parallel_size: {c.tp}",
        f"  pipeline_model_parallel_size: {c.pp}",
    ]
    if c.sp:
        lines.append("  sequence_parallel: true")
    if c.vpp:
        lines.append(f"  virtual_pipeline_model_parallel_size: {c.vpp}")
    if c.cp > 1:
        lines.append(f"  context_parallel_size: {c.cp}")
    if c.ep > 1:
        lines.append(f"  expert_model_parallel_size: {c.ep}")
    if plan.workload.rollout_share:
        lines.append(f"  rollout_tensor_parallel_size: {plan.workload.rollout_tp}")
    lines += [
        f"  micro_batch_size: {plan.workload.micro_batch}",
        f"  global_batch_size: {plan.workload.global_batch}",
        "  ddp_config:",
        f"    use_distributed_optimizer: {str(o.distributed_optimizer).lower()}",
    ]
    if o.optimizer_offload:
        lines += ["  optimizer_config:", "    optimizer_cpu_offload: true",
                  f"    optimizer_offload_fraction: {o.optimizer_offload}"]  # fmt: skip
    transformer = [f"    {k}: {str(v).lower()}" for k, v in best.split.set_fields().items()]
    if o.full_recompute:
        transformer += ["    recompute_granularity: full", "    recompute_method: uniform",
                        "    recompute_num_layers: 1"]  # fmt: skip
    if transformer:
        lines += ["  transformer_config:", *transformer]
    return lines
