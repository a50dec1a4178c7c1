"""Per-GPU memory of a GRPO run for one parallel layout, phase by phase.

Per pipeline rank, in bytes (bf16 parameters unless ``Workload.param_bytes`` says otherwise):

* **weights**: the rank's parameters × 2. A rank holds 1/TP of every attention and dense MLP
  matrix, 1/(EP·ETP) of the routed experts, the vocabulary-parallel embedding (first stage)
  and output layer (last stage; tied embeddings get a copy there when PP > 1, as in Megatron).
* **gradients**: parameters × 2, or × 4 with ``grad_reduce_in_fp32`` (Megatron's DDP buffer).
* **optimizer**: fp32 main weights + Adam's two moments = 12 bytes per parameter (8 when the
  parameters are fp32 already); the distributed optimizer shards dense state over DP × CP and
  expert state over the expert data-parallel size; CPU offload moves it to host memory.
* **activations**: what the backward pass keeps per token per layer with flash attention, in
  elements: ``4h / SP + (2·heads + 2·kv_heads)·head_dim / TP + 4·ffn / TP`` (norm and
  projection inputs, split over the TP group with sequence parallelism: SP = TP, else 1;
  Q, K, V and the attention output; gate, up, their SwiGLU product's two inputs), MoE layers
  ``4h / SP + attention + top_k·(h + 4·moe_ffn / ETP) + 4·shared_ffn / TP``; full recompute keeps
  only each layer's input (``h``) plus one layer's activations while it is recomputed. Tokens
  per micro-batch are ``seq_len × micro_batch / CP``; the 1F1B schedule keeps ``PP − rank``
  micro-batches in flight on a rank, the interleaved one
  ``(2·(PP − rank − 1) + (VPP − 1)·PP + 1) / VPP``.
* **logits** (last stage): ``tokens × vocab / TP × 6`` bytes (bf16 logits kept for the
  backward pass and an fp32 working block of the log-prob kernel).
* **reference model** (KL to the initial policy): a second copy of the weights.
* **rollout engine** (colocated vLLM): ``vllm_gpu_memory_utilization × GPU memory`` while
  generating; while training, asleep, ~1 GiB (its CUDA graphs), or all of it if it stays awake.
  The engine's own weights (bf16, split over ``rollout_tp`` GPUs) must leave 10% of that
  share for its KV cache.
* **overhead**: 2 GiB for the CUDA context, communication buffers and allocator slack.

The update phase holds weights, gradients, optimizer, activations and logits; the rollout
phase holds weights, gradients and optimizer (Megatron keeps its buffers) beside the engine.
The peak is the larger of the two, on the worst pipeline rank. Checked against a hand
calculation and against peak memory measured on an H100 in ``tests/unit/test_planner.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from oumi_megatron.planner.architecture import Architecture
from oumi_megatron.planner.hardware import GiB

ACTIVATION_BYTES = 2
LOGIT_BYTES = 6
OVERHEAD_BYTES = 2 * GiB
ASLEEP_ENGINE_BYTES = 1 * GiB


@dataclass(frozen=True)
class Candidate:
    """One parallel layout on ``world_size`` GPUs, with derived sizes."""

    tp: int
    pp: int
    cp: int
    dp: int
    ep: int = 1
    etp: int = 1
    vpp: int | None = None
    stage_layers: tuple[int, ...] = ()
    split_note: str = ""
    """Uneven pipeline split (empty when even)."""
    sp: bool = False
    """Sequence parallelism (the planner's layouts use it at TP > 1)."""

    @property
    def expert_dp(self) -> int:
        return self.tp * self.pp * self.cp * self.dp // (self.etp * self.ep * self.pp)

    def label(self) -> str:
        """``TP8×PP2``-style, as ``ParallelLayout`` prints itself."""
        from oumi_megatron.parallel.layout import ParallelLayout

        return str(ParallelLayout(tp=self.tp, pp=self.pp, vpp=self.vpp, cp=self.cp, ep=self.ep))


@dataclass(frozen=True)
class Workload:
    seq_len: int
    micro_batch: int
    global_batch: int
    """Sequences per optimizer step."""
    param_bytes: int = 2
    grad_reduce_in_fp32: bool = False
    reference_model: bool = False
    rollout_share: float = 0.0
    """Fraction of GPU memory a colocated rollout engine takes when awake (0: none)."""
    rollout_sleeps: bool = True
    rollout_tp: int = 1
    """GPUs per rollout engine (its weights are split over them)."""
    tokens_per_microbatch: int | None = None
    """Packed micro-batch token budget; None: ``seq_len × micro_batch``."""

    @property
    def micro_tokens(self) -> int:
        return self.tokens_per_microbatch or self.seq_len * self.micro_batch


@dataclass(frozen=True)
class Options:
    """Memory savers, cheapest first in the planner's search."""

    distributed_optimizer: bool = True
    full_recompute: bool = False
    optimizer_offload: float = 0.0
    """Fraction of the optimizer state kept on the CPU."""

    def describe(self) -> str:
        parts = ["dist-opt"] if self.distributed_optimizer else []
        parts += ["recompute"] if self.full_recompute else []
        if self.optimizer_offload:
            parts.append("offload" if self.optimizer_offload == 1 else
                         f"offload {self.optimizer_offload:.0%}")  # fmt: skip
        return ", ".join(parts) or "-"


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes on the worst GPU (``rank``: its pipeline rank)."""

    rank: int
    weights: float
    gradients: float
    optimizer: float
    optimizer_cpu: float
    reference: float
    activations: float
    logits: float
    engine_awake: float
    engine_asleep: float
    engine_weights: float
    """The policy's bf16 weights per GPU of a rollout engine (must fit in ``engine_awake``)."""
    overhead: float = OVERHEAD_BYTES

    @property
    def resident(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.reference + self.overhead

    @property
    def update_peak(self) -> float:
        return self.resident + self.activations + self.logits + self.engine_asleep

    @property
    def rollout_peak(self) -> float:
        return self.resident + self.engine_awake

    @property
    def peak(self) -> float:
        return max(self.update_peak, self.rollout_peak)

    @property
    def engine_fits(self) -> bool:
        """The engine's weights leave at least 10% of its share for the KV cache."""
        return not self.engine_awake or self.engine_weights <= 0.9 * self.engine_awake

    def fits(self, gpu_memory: float) -> bool:
        return self.peak <= gpu_memory and self.engine_fits

    @property
    def phase(self) -> str:
        return "update" if self.update_peak >= self.rollout_peak else "rollout"

    def breakdown(self) -> dict[str, float]:
        """GiB per component (what the report prints)."""
        return {
            "weights": self.weights / GiB,
            "gradients": self.gradients / GiB,
            "optimizer": self.optimizer / GiB,
            "optimizer on CPU": self.optimizer_cpu / GiB,
            "reference model": self.reference / GiB,
            "activations": self.activations / GiB,
            "logits": self.logits / GiB,
            "rollout engine (generating)": self.engine_awake / GiB,
            "rollout engine (during update)": self.engine_asleep / GiB,
            "overhead": self.overhead / GiB,
        }


def rank_params(arch: Architecture, cand: Candidate, rank: int) -> tuple[float, float]:
    """(dense, expert) parameters held by pipeline rank ``rank``."""
    layers = cand.stage_layers[rank]
    moe_fraction = arch.moe_layers / arch.num_layers
    h = arch.hidden_size
    per_layer = arch.attention_params / cand.tp + 2 * h + arch.layer_extra_params  # extras: whole
    dense = layers * per_layer + layers * (1 - moe_fraction) * arch.dense_mlp_params / cand.tp
    moe_layers = layers * moe_fraction
    dense += moe_layers * (
        h * (arch.num_experts or 0) + 3 * h * arch.shared_expert_ffn_hidden_size / cand.tp
    )
    expert = moe_layers * arch.expert_params / (cand.ep * cand.etp)
    embedding = arch.embedding_params / cand.tp
    if rank == 0:
        dense += embedding
    if rank == cand.pp - 1:
        dense += h  # final norm
        if not arch.tied_embeddings or cand.pp > 1:
            dense += embedding
    return dense, expert


def activation_elements_per_token(arch: Architecture, cand: Candidate) -> float:
    """Elements one token keeps for the backward pass in one (average) layer."""
    h, tp = arch.hidden_size, cand.tp
    # The norm and projection inputs: 1/TP of the tokens under sequence parallelism.
    hidden = 4 * h / (tp if cand.sp else 1)
    attention = (2 * arch.num_attention_heads + 2 * arch.num_kv_heads) * arch.head_dim / tp
    dense = hidden + attention + 4 * arch.ffn_hidden_size / tp
    if not arch.moe_layers:
        return dense
    routed = arch.moe_top_k * (h + 4 * arch.moe_ffn_hidden_size / cand.etp)
    moe = hidden + attention + routed + 4 * arch.shared_expert_ffn_hidden_size / tp
    fraction = arch.moe_layers / arch.num_layers
    return fraction * moe + (1 - fraction) * dense


def in_flight_microbatches(cand: Candidate, rank: int, num_micro: int) -> float:
    """Micro-batches whose activations pipeline rank ``rank`` holds at once."""
    if cand.pp == 1:
        return 1.0
    if cand.vpp is None:
        return float(min(num_micro, cand.pp - rank))
    chunks = 2 * (cand.pp - rank - 1) + (cand.vpp - 1) * cand.pp + 1
    return min(float(num_micro), chunks / cand.vpp)


def estimate_memory(
    arch: Architecture,
    cand: Candidate,
    work: Workload,
    options: Options,
    gpu_memory: float,
) -> MemoryEstimate:
    """The worst pipeline rank's memory for this layout, workload and options."""
    ranks = [_rank_memory(arch, cand, work, options, gpu_memory, r) for r in range(cand.pp)]
    return max(ranks, key=lambda m: m.peak)


def _rank_memory(
    arch: Architecture,
    cand: Candidate,
    work: Workload,
    options: Options,
    gpu_memory: float,
    rank: int,
) -> MemoryEstimate:
    dense, expert = rank_params(arch, cand, rank)
    params = dense + expert
    state_bytes = 12 if work.param_bytes < 4 else 8
    if options.distributed_optimizer:
        state = state_bytes * (dense / (cand.dp * cand.cp) + expert / cand.expert_dp)
    else:
        state = state_bytes * params
    num_micro = max(1, work.global_batch // (work.micro_batch * cand.dp))
    tokens = work.micro_tokens / cand.cp
    per_token_layer = activation_elements_per_token(arch, cand) * ACTIVATION_BYTES
    layers = cand.stage_layers[rank]
    if options.full_recompute:
        kept = layers * arch.hidden_size * ACTIVATION_BYTES * tokens
        activations = kept * in_flight_microbatches(cand, rank, num_micro)
        activations += per_token_layer * tokens  # one layer recomputed at a time
    else:
        activations = layers * per_token_layer * tokens
        activations *= in_flight_microbatches(cand, rank, num_micro)
    logits = tokens * arch.vocab_size / cand.tp * LOGIT_BYTES if rank == cand.pp - 1 else 0.0
    awake = work.rollout_share * gpu_memory
    asleep = min(awake, ASLEEP_ENGINE_BYTES) if work.rollout_sleeps else awake
    return MemoryEstimate(
        rank=rank,
        weights=params * work.param_bytes,
        gradients=params * (4 if work.grad_reduce_in_fp32 else work.param_bytes),
        optimizer=state * (1 - options.optimizer_offload),
        optimizer_cpu=state * options.optimizer_offload,
        reference=params * work.param_bytes if work.reference_model else 0.0,
        activations=activations,
        logits=logits,
        engine_awake=awake,
        engine_asleep=asleep,
        engine_weights=arch.total_params * 2 / work.rollout_tp if awake else 0.0,
    )
