"""GPT layer specs built from Megatron-Core's local modules plus our torch core attention."""

from __future__ import annotations

from megatron.core.models.gpt.gpt_layer_specs import (
    get_gpt_decoder_block_spec,
    get_gpt_layer_local_spec,
)
from megatron.core.transformer.spec_utils import ModuleSpec

from oumi_megatron.model.attention import TorchCoreAttention


def torch_layer_spec(config, vp_stage: int | None = None):
    """Local (non-TE) spec for `config`'s layers with `TorchCoreAttention`.

    Models whose layers differ (dense and MoE layers mixed, as DeepSeek's and GLM's first
    layers are dense: ``moe_layer_freq``) or that use multi-latent attention get Megatron's
    block spec (one spec per layer of this pipeline stage), as Megatron-Bridge gives them with
    Transformer Engine; uniform models get one layer spec.
    """
    if _heterogeneous(config):
        block = get_gpt_decoder_block_spec(
            config, use_transformer_engine=False, normalization=config.normalization,
            vp_stage=vp_stage,
        )  # fmt: skip
        for layer in block.layer_specs:
            layer.submodules.self_attention.submodules.core_attention = TorchCoreAttention
        return block
    spec = get_gpt_layer_local_spec(
        num_experts=config.num_moe_experts,
        moe_grouped_gemm=config.moe_grouped_gemm,
        qk_layernorm=config.qk_layernorm,
        normalization=config.normalization,
    )
    spec.submodules.self_attention.submodules.core_attention = TorchCoreAttention
    attention = getattr(config, "self_attention_module", None)
    if attention is not None:  # a family's own attention (``bridge_self_attention``)
        spec.submodules.self_attention.module = attention
        if attention.__name__ == "OLMoESelfAttention":  # Q/K norms over all heads, TP-split
            from oumi_megatron.model.split_norm import SplitRMSNorm

            submodules = spec.submodules.self_attention.submodules
            submodules.q_layernorm = submodules.k_layernorm = SplitRMSNorm
    from oumi_megatron.model.gemma import gemma_block_spec, is_gemma

    if is_gemma(config):  # the provider itself: sandwich and zero-centred norms
        return gemma_block_spec(config, spec, vp_stage)
    return spec


def bridge_self_attention(layer_spec) -> type | None:
    """The self-attention class a Megatron-Bridge layer spec function puts in its layers, for
    families whose attention differs from Megatron's (OLMoE: Q/K norms over the whole width
    rather than per head; Gemma 3: a local or global rotary base per layer); None for
    Megatron's own."""
    if not callable(layer_spec) or isinstance(layer_spec, ModuleSpec):
        return None
    name = getattr(layer_spec, "__name__", "")
    if name == "olmoe_layer_spec":
        from megatron.bridge.models.olmoe.olmoe_provider import OLMoESelfAttention

        return OLMoESelfAttention
    if name == "gemma3_layer_spec":  # local or global rotary base per layer
        from megatron.bridge.models.gemma.gemma3_provider import Gemma3SelfAttention

        return Gemma3SelfAttention
    return None


def _heterogeneous(config) -> bool:
    frequency = getattr(config, "moe_layer_freq", 1)
    mixed = config.num_moe_experts is not None and frequency not in (1, None)
    return bool(mixed or getattr(config, "multi_latent_attention", False))
