"""GPT layer specs built from Megatron-Core's local modules plus our torch core attention."""

from __future__ import annotations

from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer.spec_utils import ModuleSpec

from oumi_megatron.model.attention import TorchCoreAttention


def torch_layer_spec(config) -> ModuleSpec:
    """Local (non-TE) spec for `config`'s dense or MoE layers with `TorchCoreAttention`."""
    spec = get_gpt_layer_local_spec(
        num_experts=config.num_moe_experts,
        moe_grouped_gemm=config.moe_grouped_gemm,
        qk_layernorm=config.qk_layernorm,
        normalization=config.normalization,
    )
    spec.submodules.self_attention.submodules.core_attention = TorchCoreAttention
    return spec
