"""Megatron model construction from a Bridge provider, with settings that run without TE."""

from __future__ import annotations

import torch

from oumi_megatron.parallel.layout import ParallelLayout

# Fusions that need Transformer Engine or Apex kernels (or change numerics: the fused
# cross-entropy casts gradients to bf16). Off everywhere so CPU and GPU give the same results.
# (The fused SwiGLU is plain torch, its backward Triton: `fused_swiglu` decides it,
# `model.swiglu_backward` has the backward.)
_TE_ONLY_FUSIONS = (
    "persist_layer_norm",
    "apply_rope_fusion",
    "gradient_accumulation_fusion",
    "bias_dropout_fusion",
    "masked_softmax_fusion",
    "cross_entropy_loss_fusion",
)


def configure_provider(
    provider, layout: ParallelLayout, params_dtype: torch.dtype = torch.float32, hf_config=None
):
    """Apply `layout`, dtype and the TE-free layer spec to a Bridge `GPTModelProvider`;
    with `hf_config`, also its sliding windows (``model.attention_windows``)."""
    from oumi_megatron.model.attention_windows import apply_windows
    from oumi_megatron.model.layer_spec import bridge_self_attention, torch_layer_spec
    from oumi_megatron.model.rope import install_packed_rope

    install_packed_rope()
    if hf_config is not None:
        apply_windows(provider, hf_config)
    scalar = getattr(provider, "query_pre_attn_scalar", None)  # Gemma 2: its own query scale
    if scalar and provider.softmax_scale is None:
        provider.softmax_scale = float(scalar) ** -0.5

    provider.tensor_model_parallel_size = layout.tp
    provider.pipeline_model_parallel_size = layout.pp
    provider.virtual_pipeline_model_parallel_size = layout.vpp
    provider.context_parallel_size = layout.cp
    provider.expert_model_parallel_size = layout.ep
    provider.expert_tensor_parallel_size = layout.etp
    provider.sequence_parallel = layout.sp_size > 1
    for name, value in layout.split.megatron_fields().items():
        setattr(provider, name, value)
    # Megatron-LM's defaults for the interleaved schedule: with PP=2 both neighbours are one
    # rank, and batched p2p would send forward activations and backward gradients to it on one
    # group in one batch, where they can be matched to the wrong receive (they have one shape).
    # Unbatched p2p puts the two directions on separate groups.
    provider.overlap_p2p_comm = layout.vpp is not None
    provider.batch_p2p_comm = layout.vpp is None
    for name in _TE_ONLY_FUSIONS:
        setattr(provider, name, False)
    provider.bias_activation_fusion = fused_swiglu(provider, torch.cuda.is_available())
    if provider.bias_activation_fusion:
        from oumi_megatron.model import swiglu_backward

        if swiglu_backward.chosen():
            swiglu_backward.install_swiglu_backward()
    # Transformer Engine's attention choice, which Megatron writes into NVTE_* environment
    # variables once per process and asserts on later: Bridge picks "flash" for Gemma 3 and
    # "auto" elsewhere. Our core attention ignores it; one value lets models of different
    # families be built in one process.
    from megatron.core.transformer.enums import AttnBackend

    provider.attention_backend = AttnBackend.auto
    if not torch.cuda.is_available():
        # Megatron compiles some activations with torch.compile (Gemma's GELU, GPT-OSS's
        # quick GELU): on a CPU that is a C++ build in every new process, ~30 s before the
        # first update. The eager function computes the same.
        activation = provider.activation_func
        provider.activation_func = getattr(activation, "_torchdynamo_orig_callable", activation)
    provider.self_attention_module = bridge_self_attention(provider.transformer_layer_spec)
    provider.transformer_layer_spec = torch_layer_spec
    provider.params_dtype = params_dtype
    provider.bf16 = params_dtype == torch.bfloat16
    provider.fp16 = params_dtype == torch.float16
    provider.pipeline_dtype = params_dtype
    provider.autocast_dtype = params_dtype
    provider.hidden_dropout = 0.0
    provider.attention_dropout = 0.0
    if provider.num_moe_experts:
        provider.moe_grouped_gemm = False
        provider.moe_permute_fusion = False
        provider.moe_token_dispatcher_type = token_dispatcher(layout)
        # Bridge turns it on for DeepSeek/GLM; it runs shared experts on a side CUDA stream
        # and needs the all-to-all dispatcher (same results without it).
        provider.moe_shared_expert_overlap = False
    # DeepSeek-V3 and GLM-4.5 publish multi-token-prediction layers (num_nextn_predict_layers),
    # which Bridge would build with Transformer Engine's spec. Hugging Face's forward, vLLM's
    # sampling and the GRPO loss never use them: they are not built, trained or exported.
    provider.mtp_num_layers = None
    provider.finalize()
    return provider


def fused_swiglu(provider, cuda: bool) -> bool:
    """Whether Megatron's fused SwiGLU applies: its forward is one `torch.compile`'d kernel and
    its backward one Triton pass (`model.swiglu_backward`; no Transformer Engine), instead
    of SiLU, a multiply and, in the backward, a concatenation of the two halves' gradients,
    each a pass over the whole MLP width; it also keeps only the MLP's input for the
    backward. On CUDA only (on a CPU each process would first build C++ for it) and only for
    plain SwiGLU: Megatron's fused path has no clamp, linear offset or other gated activation
    (Gemma's GELU, GPT-OSS's clamped one)."""
    import torch.nn.functional as F

    return (
        cuda
        and bool(provider.gated_linear_unit)
        and provider.activation_func is F.silu
        and provider.activation_func_clamp_value is None
        and not provider.glu_linear_offset
        and not getattr(provider, "use_te_activation_func", False)
    )


def token_dispatcher(layout: ParallelLayout) -> str:
    """The all-to-all dispatcher creates CUDA streams at construction; all-gather works on
    gloo and gives identical routing."""
    return "alltoall" if layout.ep > 1 and torch.cuda.is_available() else "allgather"


def needs_equal_microbatch_shapes(layout: ParallelLayout) -> bool:
    """Whether every rank must run micro-batches of one shape: the interleaved pipeline
    schedule exchanges fixed shapes, and the all-gather dispatcher gathers equal-sized token
    blocks over the expert-parallel ranks (which hold different data)."""
    return layout.vpp is not None or (layout.ep > 1 and token_dispatcher(layout) == "allgather")


def _cast_to_params_dtype(config, module: torch.nn.Module) -> torch.nn.Module:
    """Bridge's mixed-precision hook (applied only for bf16/fp16): every parameter in
    `params_dtype`, norms included, like Megatron's `Float16Module`, but without its wrapper,
    which would also cast the last stage's logits to fp32 (the full logits of a micro-batch,
    which the chunked log-probs avoid). Bridge keeps parameters marked fp32 (MoE expert bias).
    One dtype also keeps the distributed optimizer's parameter groups in model order."""
    return module.to(config.params_dtype)


def build_model(provider, wrap_with_ddp: bool = False, ddp_config=None) -> list[torch.nn.Module]:
    """Instantiate the model chunks (one per virtual pipeline stage) on this rank.

    DDP wrapping uses Megatron-Core's `DistributedDataParallel` directly: Bridge's wrapper
    initialises it on a CUDA stream, which a CPU-only machine does not have.
    """
    chunks = provider.provide_distributed_model(
        wrap_with_ddp=False,
        use_cpu_initialization=not torch.cuda.is_available(),
        mixed_precision_wrapper=_cast_to_params_dtype,
    )
    if not wrap_with_ddp:
        return chunks
    from megatron.core.distributed import DistributedDataParallel

    return [
        DistributedDataParallel(
            config=provider, ddp_config=ddp_config, module=chunk, disable_bucketing=index > 0
        )
        for index, chunk in enumerate(chunks)
    ]
