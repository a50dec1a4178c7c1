"""Estimated seconds of one optimizer step (forward + backward over the global batch) for a
layout: what ranks layouts against each other, not a prediction of wall time.

* **compute**: model FLOPs (``metrics.mfu.estimate_flops_per_token``, × 4/3 with full
  recompute) / (GPUs × peak × ``MATMUL_EFFICIENCY``).
* **pipeline bubble**: compute × (PP − 1) / (VPP × micro-batches per rank).
* **tensor parallel**: 4 all-reduces per layer per micro-batch (2 forward, 2 backward) of
  ``tokens × hidden`` bf16 activations, ring cost ``2·(TP − 1)/TP × bytes / bandwidth``,
  not overlapped (no sequence parallelism or TE overlap here).
* **context parallel**: K and V all-gathered per layer forward, their gradients
  reduce-scattered backward: ``2 × (CP − 1)/CP × tokens × 2·kv_heads·head_dim / TP × 2``.
* **expert parallel**: token dispatch and combine, forward and backward, per MoE layer:
  ``4 × (EP − 1)/EP × tokens × top_k × hidden × 2`` bytes.
* **data parallel**: gradient reduce-scatter + parameter all-gather of the rank's gradients,
  ``2·(DP·CP − 1)/(DP·CP) × bytes``, exposed (not overlapped with the backward pass).
* **CPU optimizer**: the offloaded state's gradients down and parameters up over PCIe, and
  the CPU Adam step at ``CPU_ADAM_PARAMS_PER_S``.

Each collective uses NVLink bandwidth while its group fits in one node (ranks are ordered
TP, CP, EP, DP, PP from fastest-varying, as Megatron orders them) and the inter-node
bandwidth otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from oumi_megatron.metrics.mfu import estimate_flops_per_token
from oumi_megatron.planner.architecture import Architecture
from oumi_megatron.planner.hardware import Hardware
from oumi_megatron.planner.memory import Candidate, Options, Workload, rank_params

MATMUL_EFFICIENCY = 0.45
CPU_ADAM_PARAMS_PER_S = 1.0e9


@dataclass(frozen=True)
class StepCost:
    compute: float
    bubble: float
    tensor_parallel: float
    context_parallel: float
    expert_parallel: float
    data_parallel: float
    cpu_optimizer: float

    @property
    def total(self) -> float:
        return (
            self.compute + self.bubble + self.tensor_parallel + self.context_parallel
            + self.expert_parallel + self.data_parallel + self.cpu_optimizer
        )  # fmt: skip

    @property
    def communication(self) -> float:
        return (
            self.tensor_parallel + self.context_parallel + self.expert_parallel
            + self.data_parallel
        )  # fmt: skip


def _bandwidth(group_span: int, hw: Hardware) -> float:
    """Per-GPU bandwidth of a collective whose ranks span ``group_span`` consecutive GPUs."""
    return hw.intra_node_bw if group_span <= hw.gpus_per_node else hw.inter_node_bw


def _ring(size: int, nbytes: float, bandwidth: float) -> float:
    return 2 * (size - 1) / size * nbytes / bandwidth if size > 1 else 0.0


def estimate_step(
    arch: Architecture, cand: Candidate, work: Workload, options: Options, hw: Hardware
) -> StepCost:
    world = cand.tp * cand.pp * cand.cp * cand.dp
    flops_per_token = estimate_flops_per_token(
        arch.num_layers, arch.hidden_size, arch.ffn_hidden_size, arch.num_attention_heads,
        arch.num_kv_heads, arch.vocab_size, work.seq_len,
        num_experts=arch.num_experts, moe_top_k=arch.moe_top_k or None,
        moe_ffn_hidden_size=arch.moe_ffn_hidden_size or None, kv_channels=arch.head_dim,
        shared_expert_ffn_hidden_size=arch.shared_expert_ffn_hidden_size,
    )  # fmt: skip
    if options.full_recompute:
        flops_per_token *= 4 / 3
    tokens = work.global_batch * work.seq_len
    compute = flops_per_token * tokens / (world * hw.peak_flops * MATMUL_EFFICIENCY)
    num_micro = max(1, work.global_batch // (work.micro_batch * cand.dp))
    bubble = compute * (cand.pp - 1) / ((cand.vpp or 1) * num_micro)

    micro_tokens = work.micro_tokens / cand.cp
    layers = max(cand.stage_layers)
    passes = num_micro * layers
    activation = micro_tokens * arch.hidden_size * 2
    tensor = 2 * passes * _ring(cand.tp, activation, _bandwidth(cand.tp, hw))
    kv = micro_tokens * 2 * arch.num_kv_heads * arch.head_dim / cand.tp * 2
    context = passes * _ring(cand.cp, kv, _bandwidth(cand.tp * cand.cp, hw))
    expert = 0.0
    if cand.ep > 1 and arch.moe_layers:
        moe_passes = passes * arch.moe_layers / arch.num_layers
        routed = micro_tokens * arch.moe_top_k * arch.hidden_size * 2
        span = cand.tp * cand.cp * cand.ep
        expert = 4 * moe_passes * (cand.ep - 1) / cand.ep * routed / _bandwidth(span, hw)
    dense, expert_params = max(
        (rank_params(arch, cand, r) for r in range(cand.pp)), key=lambda p: sum(p)
    )
    grad_bytes = 4 if work.grad_reduce_in_fp32 else work.param_bytes
    dp_group = cand.dp * cand.cp
    data = _ring(dp_group, dense * grad_bytes, _bandwidth(cand.tp * dp_group, hw))
    data += _ring(cand.expert_dp, expert_params * grad_bytes, _bandwidth(world // cand.pp, hw))
    offloaded = (dense / dp_group + expert_params / cand.expert_dp) * options.optimizer_offload
    if not options.distributed_optimizer:
        offloaded = (dense + expert_params) * options.optimizer_offload
    cpu = offloaded * (grad_bytes + work.param_bytes) / hw.host_bw
    cpu += offloaded / CPU_ADAM_PARAMS_PER_S
    return StepCost(compute, bubble, tensor, context, expert, data, cpu)
