"""GPT layer specs built from Megatron-Core's local modules plus our torch core attention."""

from __future__ import annotations

import torch
from megatron.core.models.gpt.gpt_layer_specs import (
    get_gpt_decoder_block_spec,
    get_gpt_layer_local_spec,
)
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.torch_norm import WrappedTorchNorm
from megatron.core.transformer.transformer_block import (
    TransformerBlockSubmodules,
    get_num_layers_to_build,
)

from oumi_megatron.model.attention import TorchCoreAttention


class TorchNorm:
    """Megatron's `WrappedTorchNorm` (torch's LayerNorm / RMSNorm), also under sequence
    parallelism, which Megatron's wrapper refuses: each TP rank then normalises its part of
    the sequence, and the weights are marked ``sequence_parallel`` so that
    `finalize_model_grads` sums their gradients over the TP group (as Transformer Engine's norm
    does)."""

    # Hidden-state norms see 1/TP of the sequence; Q/K norms (`TorchHeadNorm`) see all of it.
    splits_sequence = True

    def __new__(cls, config, hidden_size: int, eps: float = 1e-5, **kwargs):
        if not config.sequence_parallel:
            return WrappedTorchNorm(config, hidden_size, eps, **kwargs)
        if config.layernorm_zero_centered_gamma or config.memory_efficient_layer_norm:
            raise NotImplementedError(
                "megatron.sequence_parallel: torch norms have no zero-centred or "
                "memory-efficient variant; set megatron.sequence_parallel: false"
            )
        norms = {"LayerNorm": torch.nn.LayerNorm, "RMSNorm": torch.nn.RMSNorm}
        if config.normalization not in norms:
            raise NotImplementedError(
                f"megatron.sequence_parallel with {config.normalization}: only LayerNorm and "
                "RMSNorm are supported; set megatron.sequence_parallel: false"
            )
        norm = norms[config.normalization](hidden_size, eps=eps)
        for param in norm.parameters():
            param.sequence_parallel = cls.splits_sequence
        return norm


class TorchHeadNorm(TorchNorm):
    """`TorchNorm` for the per-head Q/K norms, which run after the QKV projection's all-gather
    (the whole sequence, this rank's heads): their gradients are summed over TP by name
    (``q_layernorm``/``k_layernorm``) in `finalize_model_grads`, not as sequence-parallel."""

    splits_sequence = False


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
            _torch_norms(layer)
        block.layer_norm = TorchNorm
        return block
    spec = get_gpt_layer_local_spec(
        num_experts=config.num_moe_experts,
        moe_grouped_gemm=config.moe_grouped_gemm,
        qk_layernorm=config.qk_layernorm,
        normalization=config.normalization,
    )
    spec.submodules.self_attention.submodules.core_attention = TorchCoreAttention
    _torch_norms(spec)
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
    if config.sequence_parallel:  # the final norm too (Megatron's default is its wrapper)
        layers = get_num_layers_to_build(config, vp_stage=vp_stage)
        return TransformerBlockSubmodules(layer_specs=[spec] * layers, layer_norm=TorchNorm)
    return spec


def _torch_norms(layer: ModuleSpec) -> None:
    """Megatron's torch norm wrapper in ``layer`` replaced: `TorchNorm` over the hidden state,
    `TorchHeadNorm` for the Q/K norms."""
    for name in ("input_layernorm", "pre_mlp_layernorm"):
        if getattr(layer.submodules, name, None) is WrappedTorchNorm:
            setattr(layer.submodules, name, TorchNorm)
    attention = getattr(layer.submodules.self_attention, "submodules", None)
    for name in ("q_layernorm", "k_layernorm"):
        if getattr(attention, name, None) is WrappedTorchNorm:
            setattr(attention, name, TorchHeadNorm)


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
