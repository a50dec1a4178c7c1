"""``megatron:`` section: parallel layout, batching, Megatron sub-configs, weight sync."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from oumi_megatron.config.errors import ConfigError
from oumi_megatron.config.megatron_sections import (
    CheckpointConfig,
    DdpConfig,
    OptimizerConfig,
    TransformerConfig,
)
from oumi_megatron.config.strict_model import StrictModel

SECTION = "megatron"


def _path(field: str) -> str:
    return f"{SECTION}.{field}"


class MegatronParams(StrictModel):
    """Megatron-Core settings of a ``MEGATRON_*`` trainer (YAML section ``megatron:``)."""

    tensor_model_parallel_size: int = Field(1, ge=1, description="Tensor parallel size (TP).")
    pipeline_model_parallel_size: int = Field(1, ge=1, description="Pipeline parallel size (PP).")
    virtual_pipeline_model_parallel_size: int | None = Field(
        None,
        ge=1,
        description=(
            "Model chunks per pipeline stage for the interleaved schedule (VPP); needs PP > 1."
        ),
    )
    context_parallel_size: int = Field(
        1, ge=1, description="Context parallel size (CP): splits each sequence across ranks."
    )
    sequence_parallel: bool = Field(
        False,
        description=(
            "Megatron's sequence parallelism (SP): with TP > 1, the norms, residuals and the "
            "activations between a layer's tensor-parallel GEMMs hold 1/TP of the sequence on "
            "each TP rank (all-gather before, reduce-scatter after the GEMMs, instead of one "
            "all-reduce); less activation memory at the same communication volume. Ignored at "
            "TP 1."
        ),
    )
    expert_model_parallel_size: int = Field(
        1, ge=1, description="Expert parallel size (EP) for MoE layers; 1 for dense models."
    )
    expert_tensor_parallel_size: int | None = Field(
        None, ge=1, description="Tensor parallel size inside experts (ETP); None means same as TP."
    )
    micro_batch_size: int = Field(
        1,
        ge=1,
        description=(
            "Sequences per forward/backward pass on each data-parallel rank. Same as "
            "training.per_device_train_batch_size."
        ),
    )
    global_batch_size: int | None = Field(
        None,
        ge=1,
        description=(
            "Sequences per optimizer step over all data-parallel ranks. None means "
            "micro_batch_size x data-parallel size x training.gradient_accumulation_steps."
        ),
    )
    enable_sequence_packing: bool = Field(
        False, description="Pack several sequences into one micro batch row (no padding)."
    )
    max_tokens_per_microbatch: int | None = Field(
        None,
        ge=1,
        description=(
            "Token budget of a packed micro batch. None means micro_batch_size x "
            "(grpo.max_prompt_length + grpo.max_completion_length). Needs enable_sequence_packing."
        ),
    )
    ddp_config: DdpConfig = Field(default_factory=DdpConfig, description="See megatron.ddp_config.")
    optimizer_config: OptimizerConfig = Field(
        default_factory=OptimizerConfig, description="See megatron.optimizer_config."
    )
    transformer_config: TransformerConfig = Field(
        default_factory=TransformerConfig, description="See megatron.transformer_config."
    )
    checkpoint_config: CheckpointConfig = Field(
        default_factory=CheckpointConfig, description="See megatron.checkpoint_config."
    )
    enable_weight_sync: bool = Field(
        True,
        description=(
            "Copy the trained weights into the inference engine after every optimizer step."
        ),
    )
    weight_sync_method: Literal["auto", "inprocess", "nccl", "gloo", "checkpoint"] = Field(
        "auto",
        description=(
            "How weights reach the inference engine: 'inprocess' (same process, no copy over "
            "the network), 'nccl'/'gloo' (collective broadcast), 'checkpoint' (via files). "
            "'auto' lets the trainer choose at start-up."
        ),
    )
    weight_sync_bucket_size_mb: int = Field(
        512, ge=1, description="Size of the buckets weights are sent in, in MiB."
    )
    rollout_tensor_parallel_size: int = Field(
        1,
        ge=1,
        description=(
            "Ranks per rollout replica. The world is split into replicas of this many "
            "consecutive ranks (within one node); each generates and scores its own share of a "
            "step's prompts. vLLM runs one engine per replica, tensor-parallel over its ranks; "
            "the torch engine runs on the replica's first rank. Must divide the processes per "
            "node. Rollout processes (weight_sync_method gloo/nccl) ignore it: they are fed by "
            "rank 0."
        ),
    )
    rollout_nodes: int = Field(
        0,
        ge=0,
        description=(
            "Disaggregated rollout: the job's last rollout_nodes nodes do not train; each of "
            "their processes runs one rollout engine (on its own GPU), fed prompts and weights "
            "by the trainer's global rank 0 (weight_sync_method gloo or nccl). Launch every "
            "node with the same command; they meet at MASTER_ADDR:MASTER_PORT+1 "
            "(OUMI_MEGATRON_ROLLOUT_PORT overrides the port)."
        ),
    )
    rollout_timeout_s: float = Field(
        600.0,
        gt=0,
        description=(
            "Rollout processes and workers: longest wait for their start-up and for each "
            "reply (a whole step's generation) before the step fails."
        ),
    )
    rollout_workers: int = Field(
        1,
        ge=1,
        description=(
            "Rollout processes the trainer starts with weight_sync_method 'gloo' or 'nccl' "
            "(each one engine; a step's prompts are split between them). The other methods run "
            "one engine inside the trainer's rank 0."
        ),
    )
    rollout_devices: list[str] | None = Field(
        None,
        description=(
            "Device of each rollout process, e.g. ['cuda:2', 'cuda:3']. None: 'cpu' with gloo; "
            "with nccl the GPUs after the trainer's own on that node (cuda:LOCAL_WORLD_SIZE, "
            "...), since NCCL cannot connect two processes on one GPU."
        ),
    )
    inference_backend: Literal["auto", "torch", "vllm"] = Field(
        "auto",
        description=(
            "Rollout engine: 'torch' (Hugging Face transformers generate), 'vllm', or 'auto' "
            "(vllm on GPU, torch on CPU)."
        ),
    )
    vllm_gpu_memory_utilization: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description=(
            "vLLM engine in the trainer's process: fraction of the GPU's memory it may take "
            "(weights + KV cache). The policy shares that GPU, so leave it room."
        ),
    )
    vllm_enforce_eager: bool = Field(
        False,
        description=(
            "vLLM engine in the trainer's process: skip torch.compile and CUDA graphs (starts "
            "about 30 s sooner, decodes several times slower)."
        ),
    )
    vllm_sleep: bool = Field(
        True,
        description=(
            "vLLM engine in the trainer's process: release its weights and KV cache during the "
            "update (vLLM sleep mode). false keeps both resident: the weight sync is then only "
            "the copy (no re-mapping of memory), but the update must fit beside "
            "vllm_gpu_memory_utilization."
        ),
    )
    parity_gate: bool = Field(
        True,
        description=(
            "Before training, compare the converted model's first decoder layers with the "
            "Hugging Face model's on a few tokens and stop (exit code 4) if they differ: no "
            "model trains unless it converts exactly. Costs well under a second."
        ),
    )
    overwrite_output_dir: bool = Field(
        False,
        description=(
            "A fresh run (no resume) in a training.output_dir that holds another run's "
            "checkpoints, exported model or metrics is refused; true deletes them first "
            "(megatron_checkpoint/, the converted model, is kept)."
        ),
    )
    megatron_checkpoint_dir: str | None = Field(
        None,
        description=(
            "Where Megatron distributed checkpoints go. None means "
            "<training.output_dir>/megatron_checkpoint."
        ),
    )

    @property
    def model_parallel_size(self) -> int:
        """TP x PP x CP: ranks that hold one copy of the model."""
        return (
            self.tensor_model_parallel_size
            * self.pipeline_model_parallel_size
            * self.context_parallel_size
        )

    def data_parallel_size(self, world_size: int) -> int:
        """Data-parallel size for ``world_size`` ranks (`ParallelLayout.data_parallel_size`).

        Raises:
            ConfigError: if ``world_size`` is not a positive multiple of TP x PP x CP.
        """
        from oumi_megatron.parallel.layout import ParallelLayout

        try:
            return ParallelLayout.from_params(self).data_parallel_size(world_size)
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def checkpoint_dir(self, output_dir: str) -> str:
        """``megatron_checkpoint_dir``, or ``<output_dir>/megatron_checkpoint``."""
        if self.megatron_checkpoint_dir:
            return self.megatron_checkpoint_dir
        return f"{output_dir.rstrip('/')}/megatron_checkpoint"

    @model_validator(mode="after")
    def _check_cross_fields(self) -> Self:
        for check in (_check_pipeline, _check_packing, _check_ddp, _check_optimizer):
            check(self)
        _check_recompute(self.transformer_config)
        _check_weight_sync(self)
        return self


def _check_pipeline(p: MegatronParams) -> None:
    vpp = p.virtual_pipeline_model_parallel_size
    if vpp is not None and p.pipeline_model_parallel_size == 1:
        raise ValueError(
            f"{_path('virtual_pipeline_model_parallel_size')} ({vpp}) needs "
            f"{_path('pipeline_model_parallel_size')} > 1 (got 1): the interleaved schedule "
            f"splits each pipeline stage. Fix: remove "
            f"{_path('virtual_pipeline_model_parallel_size')}, "
            f"or raise {_path('pipeline_model_parallel_size')}."
        )
    t, prefix = p.transformer_config, _path("transformer_config")
    sizes = [
        name
        for name in ("num_layers_in_first_pipeline_stage", "num_layers_in_last_pipeline_stage")
        if getattr(t, name) is not None
    ]
    counted = [
        name
        for name in (
            "account_for_embedding_in_pipeline_split",
            "account_for_loss_in_pipeline_split",
        )
        if getattr(t, name)
    ]
    if (sizes or counted) and p.pipeline_model_parallel_size == 1:
        raise ValueError(
            f"{prefix}.{(sizes + counted)[0]} splits layers over pipeline stages but "
            f"{_path('pipeline_model_parallel_size')} is 1. Fix: remove it, or raise "
            f"{_path('pipeline_model_parallel_size')}."
        )
    if sizes and counted:
        raise ValueError(
            f"{prefix}.{sizes[0]} and {prefix}.{counted[0]} are both set; Megatron splits an "
            f"uneven pipeline one way or the other. Fix: keep the stage sizes or the "
            f"account_for_* switches, not both."
        )


def _check_packing(p: MegatronParams) -> None:
    if p.max_tokens_per_microbatch is not None and not p.enable_sequence_packing:
        raise ValueError(
            f"{_path('max_tokens_per_microbatch')} ({p.max_tokens_per_microbatch}) only applies "
            f"with {_path('enable_sequence_packing')}: true (got false). Fix: enable packing, "
            f"or remove {_path('max_tokens_per_microbatch')}."
        )


def _check_ddp(p: MegatronParams) -> None:
    ddp, prefix = p.ddp_config, _path("ddp_config")
    if ddp.overlap_param_gather and not ddp.use_distributed_optimizer:
        raise ValueError(
            f"{prefix}.overlap_param_gather (true) requires {prefix}.use_distributed_optimizer: "
            f"true (got false); only the distributed optimizer gathers parameters. Fix: set "
            f"{prefix}.use_distributed_optimizer: true, or {prefix}.overlap_param_gather: false."
        )
    if ddp.overlap_param_gather and not ddp.overlap_grad_reduce:
        raise ValueError(
            f"{prefix}.overlap_param_gather (true) requires {prefix}.overlap_grad_reduce: true "
            f"(got false), as in Megatron-LM. Fix: set {prefix}.overlap_grad_reduce: true, or "
            f"{prefix}.overlap_param_gather: false."
        )


def _check_optimizer(p: MegatronParams) -> None:
    opt, prefix = p.optimizer_config, _path("optimizer_config")
    if opt.overlap_cpu_optimizer_d2h_h2d and not opt.optimizer_cpu_offload:
        raise ValueError(
            f"{prefix}.overlap_cpu_optimizer_d2h_h2d (true) requires "
            f"{prefix}.optimizer_cpu_offload: true (got false). Fix: enable "
            f"{prefix}.optimizer_cpu_offload, or set overlap_cpu_optimizer_d2h_h2d: false."
        )
    if opt.optimizer_cpu_offload and opt.optimizer_offload_fraction == 0.0:
        raise ValueError(
            f"{prefix}.optimizer_offload_fraction (0.0) offloads nothing although "
            f"{prefix}.optimizer_cpu_offload is true. Fix: set optimizer_offload_fraction in "
            f"(0, 1], or optimizer_cpu_offload: false."
        )
    if opt.lr_warmup_steps is not None and opt.lr_warmup_fraction is not None:
        raise ValueError(
            f"{prefix}.lr_warmup_steps ({opt.lr_warmup_steps}) and {prefix}.lr_warmup_fraction "
            f"({opt.lr_warmup_fraction}) are both set (also reachable as training.warmup_steps "
            f"and training.warmup_ratio). Fix: keep only one of them."
        )


def _check_recompute(t: TransformerConfig) -> None:
    prefix = _path("transformer_config")
    granularity = t.recompute_granularity
    if t.recompute_method is not None and granularity != "full":
        raise ValueError(
            f"{prefix}.recompute_method ({t.recompute_method!r}) requires "
            f"{prefix}.recompute_granularity: full (got {granularity!r}). Fix: set "
            f"recompute_granularity: full, or remove recompute_method."
        )
    if granularity == "full" and (t.recompute_method is None or t.recompute_num_layers is None):
        raise ValueError(
            f"{prefix}.recompute_granularity 'full' needs {prefix}.recompute_method "
            f"(got {t.recompute_method!r}) and {prefix}.recompute_num_layers (got "
            f"{t.recompute_num_layers!r}). Fix: e.g. recompute_method: uniform and "
            f"recompute_num_layers: 1."
        )
    if t.recompute_num_layers is not None and granularity != "full":
        raise ValueError(
            f"{prefix}.recompute_num_layers ({t.recompute_num_layers}) requires "
            f"{prefix}.recompute_granularity: full (got {granularity!r}). Fix: remove "
            f"recompute_num_layers, or use full recomputation."
        )
    if t.recompute_modules is not None and granularity != "selective":
        raise ValueError(
            f"{prefix}.recompute_modules ({t.recompute_modules}) requires "
            f"{prefix}.recompute_granularity: selective (got {granularity!r}). Fix: set "
            f"recompute_granularity: selective, or remove recompute_modules."
        )


def _check_weight_sync(p: MegatronParams) -> None:
    if not p.enable_weight_sync and p.weight_sync_method != "auto":
        raise ValueError(
            f"{_path('weight_sync_method')} ({p.weight_sync_method!r}) has no effect with "
            f"{_path('enable_weight_sync')}: false. Fix: enable weight sync, or set "
            f"{_path('weight_sync_method')}: auto."
        )
    separate = p.weight_sync_method in ("gloo", "nccl")
    if p.rollout_nodes and not separate:
        raise ValueError(
            f"{_path('rollout_nodes')} ({p.rollout_nodes}) runs rollout workers on nodes of "
            f"their own, which weight_sync_method {p.weight_sync_method!r} cannot feed. Fix: "
            f"set {_path('weight_sync_method')}: nccl (gloo on CPU), or remove "
            f"{_path('rollout_nodes')}."
        )
    if p.rollout_nodes and (p.rollout_workers != 1 or p.rollout_devices is not None):
        raise ValueError(
            f"{_path('rollout_nodes')} ({p.rollout_nodes}): every process of the rollout nodes "
            f"is a worker on its own device, so {_path('rollout_workers')} / "
            f"{_path('rollout_devices')} do not apply. Fix: remove them."
        )
    if separate and p.rollout_tensor_parallel_size != 1:
        raise ValueError(
            f"{_path('rollout_tensor_parallel_size')} ({p.rollout_tensor_parallel_size}) "
            f"splits the trainer's ranks into colocated rollout replicas, but "
            f"weight_sync_method {p.weight_sync_method!r} generates in separate rollout "
            f"processes. Fix: remove {_path('rollout_tensor_parallel_size')}, or use "
            f"weight_sync_method: auto (colocated)."
        )
    if not separate and (p.rollout_workers != 1 or p.rollout_devices is not None):
        raise ValueError(
            f"{_path('rollout_workers')} ({p.rollout_workers}) / {_path('rollout_devices')} "
            f"({p.rollout_devices}) need rollout processes, which only weight_sync_method "
            f"'gloo' or 'nccl' starts (got {p.weight_sync_method!r}). Fix: set "
            f"{_path('weight_sync_method')}: gloo (or nccl), or remove them."
        )
    if p.rollout_devices is not None and len(p.rollout_devices) != p.rollout_workers:
        raise ValueError(
            f"{_path('rollout_devices')} has {len(p.rollout_devices)} entries but "
            f"{_path('rollout_workers')} is {p.rollout_workers}. Fix: one device per worker."
        )
    if p.weight_sync_method == "nccl" and any(
        not d.startswith("cuda") for d in p.rollout_devices or []
    ):
        raise ValueError(
            f"{_path('rollout_devices')} ({p.rollout_devices}): weight_sync_method 'nccl' needs "
            f"GPU devices ('cuda:N'). Fix: use GPUs, or weight_sync_method: gloo."
        )
