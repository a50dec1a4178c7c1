"""Gemma's layers without Transformer Engine, in torch: zero-centred RMSNorm and the norms after
the attention and MLP projections ("sandwich" norms).

Megatron-Bridge's Gemma specs take these from Transformer Engine (``TENorm`` with
``zero_centered_gamma``, ``TERowParallelLinearLayerNorm``); Megatron's local spec has neither
(its torch RMSNorm refuses a zero-centred scale). The rest of Gemma is plain torch already and
comes from Bridge: the scaled embedding, the local/global rotary embeddings and the attention
that picks between them (Gemma 3). Sliding windows and soft-capping are the core attention's
(``model.attention``), set per layer from the Hugging Face config (``model.attention_windows``).
Parameter names are Megatron's, so Bridge's Gemma mappings apply unchanged.
"""

from __future__ import annotations

import functools

import torch
from megatron.core.tensor_parallel import RowParallelLinear


class ZeroCenteredRMSNorm(torch.nn.Module):
    """RMSNorm whose scale is stored as its offset from one: ``x / rms(x) · (1 + w)``, computed
    in fp32 and cast back, as Hugging Face's Gemma norms do. Built like Megatron's norms
    (``config``, ``hidden_size``, ``eps``)."""

    def __init__(self, config, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.config = config
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.zeros(hidden_size, dtype=config.params_dtype))
        self.weight.sequence_parallel = config.sequence_parallel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * (1.0 + self.weight.float())).type_as(x)


class RowParallelLinearPostNorm(RowParallelLinear):
    """Row-parallel projection followed by a zero-centred RMSNorm of its (reduced) output:
    Gemma's ``post_attention_layernorm`` and ``post_feedforward_layernorm``."""

    def __init__(self, input_size: int, output_size: int, *, config, **kwargs):
        super().__init__(input_size, output_size, config=config, **kwargs)
        self.post_layernorm = ZeroCenteredRMSNorm(config, output_size, config.layernorm_epsilon)

    def forward(self, x: torch.Tensor):
        output, bias = super().forward(x)
        if bias is not None:  # a bias added after the norm would change the model
            raise ValueError("RowParallelLinearPostNorm needs add_bias_linear=False")
        return self.post_layernorm(output), bias


def gemma_block_spec(config, layer_spec, vp_stage: int | None):
    """``layer_spec`` (Megatron's local layer spec with our core attention) with Gemma's norms,
    as a block spec whose final norm is zero-centred too."""
    from megatron.core.transformer.transformer_block import (
        TransformerBlockSubmodules,
        get_num_layers_to_build,
    )

    layer = layer_spec.submodules
    layer.input_layernorm = ZeroCenteredRMSNorm
    layer.pre_mlp_layernorm = ZeroCenteredRMSNorm
    attention = layer.self_attention.submodules
    attention.linear_proj = RowParallelLinearPostNorm
    if config.qk_layernorm:
        attention.q_layernorm = ZeroCenteredRMSNorm
        attention.k_layernorm = ZeroCenteredRMSNorm
    # Megatron gives the MLP as a ModuleSpec or as a partial of the MLP builder
    mlp = layer.mlp.keywords if isinstance(layer.mlp, functools.partial) else vars(layer.mlp)
    mlp["submodules"].linear_fc2 = RowParallelLinearPostNorm
    count = get_num_layers_to_build(config, vp_stage=vp_stage)
    return TransformerBlockSubmodules(
        layer_specs=[layer_spec] * count, layer_norm=ZeroCenteredRMSNorm
    )


def is_gemma(provider) -> bool:
    """A Bridge Gemma 2 or Gemma 3 provider (the ones with sandwich norms)."""
    from megatron.bridge.models.gemma.gemma2_provider import Gemma2ModelProvider
    from megatron.bridge.models.gemma.gemma3_provider import Gemma3ModelProvider

    return isinstance(provider, (Gemma2ModelProvider, Gemma3ModelProvider))
