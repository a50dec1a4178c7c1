"""Sub-sections of ``megatron:``: DDP, optimizer, transformer and checkpoint settings.

Defaults follow Megatron-Core's own config classes unless a field documents otherwise.
Fields that Oumi's ``training:`` section also defines (weight decay, Adam betas, warmup,
grad clipping, LR schedule) default to Oumi's defaults and are reconciled with it; see
``aliases.py``. Cross-field checks live in ``MegatronParams`` so their messages can name
full dotted paths.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from oumi_megatron.config.strict_model import StrictModel

ParamsDtype = Literal["auto", "fp32", "bf16", "fp16"]
RecomputeModule = Literal[
    "core_attn",
    "moe_act",
    "layernorm",
    "mla_up_proj",
    "mlp",
    "moe",
    "shared_experts",
    "gdn_norm_out",
]


class DdpConfig(StrictModel):
    """Megatron DistributedDataParallelConfig settings."""

    grad_reduce_in_fp32: bool = Field(
        False,
        description=(
            "Reduce gradients across data-parallel ranks in fp32 (more exact, more memory)."
        ),
    )
    overlap_grad_reduce: bool = Field(
        False, description="Overlap the gradient reduce-scatter/all-reduce with the backward pass."
    )
    overlap_param_gather: bool = Field(
        False,
        description=(
            "Overlap the distributed optimizer's parameter all-gather with the next forward "
            "pass. Needs use_distributed_optimizer and overlap_grad_reduce."
        ),
    )
    average_in_collective: bool = Field(
        False, description="Average gradients inside the collective instead of pre-scaling them."
    )
    use_distributed_optimizer: bool = Field(
        False, description="Shard optimizer state across data-parallel ranks (ZeRO-1 style)."
    )


class OptimizerConfig(StrictModel):
    """Megatron OptimizerConfig settings (the optimizer is AdamW)."""

    optimizer_cpu_offload: bool = Field(
        False, description="Keep (part of) the optimizer state and its update on the CPU."
    )
    optimizer_offload_fraction: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description=(
            "Fraction of the optimizer state offloaded when optimizer_cpu_offload is on. "
            "Megatron's default is 0.0, which would offload nothing, hence 1.0 here."
        ),
    )
    overlap_cpu_optimizer_d2h_h2d: bool = Field(
        False,
        description=(
            "Overlap CPU optimizer steps with device<->host copies. Needs optimizer_cpu_offload."
        ),
    )
    clip_grad: float = Field(
        1.0,
        ge=0.0,
        description="Global L2 gradient-norm clip; 0 disables. Same as training.max_grad_norm.",
    )
    weight_decay: float = Field(
        0.0, ge=0.0, description="Decoupled (AdamW) weight decay. Same as training.weight_decay."
    )
    adam_beta1: float = Field(
        0.9, ge=0.0, lt=1.0, description="Adam beta1. Same as training.adam_beta1."
    )
    adam_beta2: float = Field(
        0.999, ge=0.0, lt=1.0, description="Adam beta2. Same as training.adam_beta2."
    )
    adam_eps: float = Field(
        1e-8, gt=0.0, description="Adam epsilon. Same as training.adam_epsilon."
    )
    lr_warmup_steps: int | None = Field(
        None,
        ge=0,
        description="Linear warmup length in optimizer steps. Same as training.warmup_steps.",
    )
    lr_warmup_fraction: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description=(
            "Warmup length as a fraction of training.max_steps. Same as training.warmup_ratio. "
            "Mutually exclusive with lr_warmup_steps."
        ),
    )
    lr_decay_style: Literal["constant", "linear", "cosine"] = Field(
        "linear",
        description=(
            "LR decay after warmup, from training.learning_rate to min_lr. Same as "
            "training.lr_scheduler_type."
        ),
    )
    min_lr: float = Field(0.0, ge=0.0, description="LR at the end of the decay.")


class TransformerConfig(StrictModel):
    """Megatron TransformerConfig settings that a recipe may change."""

    recompute_granularity: Literal["full", "selective"] | None = Field(
        None,
        description=(
            "Activation recomputation: 'full' recomputes whole layers, 'selective' only the "
            "submodules in recompute_modules, None disables it."
        ),
    )
    recompute_method: Literal["uniform", "block"] | None = Field(
        None,
        description=(
            "How full recomputation picks layers: 'uniform' checkpoints groups of "
            "recompute_num_layers layers, 'block' the first recompute_num_layers layers of "
            "each pipeline stage. Required with recompute_granularity 'full', else unset."
        ),
    )
    recompute_num_layers: int | None = Field(
        None, ge=1, description="Layers per recompute unit; required with 'full', unset otherwise."
    )
    recompute_modules: list[RecomputeModule] | None = Field(
        None,
        description=(
            "Submodules to recompute with 'selective' (None means Megatron's ['core_attn'])."
        ),
    )
    num_layers_in_first_pipeline_stage: int | None = Field(
        None,
        ge=1,
        description=(
            "Uneven pipeline: layers on the first pipeline stage (the middle stages share the "
            "rest equally). For layer counts that do not divide over the stages; `oumi-megatron "
            "plan` proposes a split."
        ),
    )
    num_layers_in_last_pipeline_stage: int | None = Field(
        None, ge=1, description="Uneven pipeline: layers on the last pipeline stage."
    )
    account_for_embedding_in_pipeline_split: bool = Field(
        False,
        description=(
            "Uneven pipeline: count the input embedding as one layer when splitting layers over "
            "the stages (the first stage gets one layer fewer). Not with explicit stage sizes."
        ),
    )
    account_for_loss_in_pipeline_split: bool = Field(
        False,
        description=(
            "Uneven pipeline: count the output layer and loss as one layer (the last stage "
            "gets one layer fewer). Not with explicit stage sizes."
        ),
    )
    params_dtype: ParamsDtype = Field(
        "auto",
        description="Parameter/compute dtype; 'auto' is bf16 on GPU and fp32 on CPU.",
    )
    gradient_accumulation_fusion: bool | None = Field(
        None,
        description=(
            "The transformer layers' weight-gradient GEMMs add straight into DDP's gradient "
            "buffer instead of writing a gradient that a hook then adds (one pass over all "
            "weight gradients less per micro-batch; no Apex needed). None: on with CUDA, off "
            "on CPU (where it changes results by float rounding only)."
        ),
    )

    def resolved_gradient_accumulation_fusion(self, cuda: bool) -> bool:
        """``gradient_accumulation_fusion`` with None resolved for a machine with/without CUDA."""
        if self.gradient_accumulation_fusion is None:
            return cuda
        return self.gradient_accumulation_fusion

    def resolved_params_dtype(self, device_type: str) -> Literal["fp32", "bf16", "fp16"]:
        """``params_dtype`` with ``auto`` resolved for a torch device type ("cuda", "cpu")."""
        if self.params_dtype != "auto":
            return self.params_dtype
        return "bf16" if device_type == "cuda" else "fp32"


class CheckpointConfig(StrictModel):
    """Megatron distributed-checkpoint settings (how often: training.save_steps)."""

    keep_last: int | None = Field(
        3,
        ge=1,
        description="Training checkpoints to keep under output_dir/checkpoints; None keeps all.",
    )

    use_async_checkpoint: bool = Field(
        False, description="Write checkpoints in the background while training continues."
    )
    use_fully_parallel_strategy: bool = Field(
        True,
        description=(
            "Spread checkpoint save/load work over all data-parallel ranks instead of rank 0 of "
            "each replica."
        ),
    )
