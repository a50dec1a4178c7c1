"""Megatron-Bridge mappings the trainer adds, through Bridge's own registration API.

**Mixtral** has no bridge in Megatron-Bridge 0.6.2: ``mixtral_bridge`` declares one like
Bridge's own (a provider from the HF config, a table of parameter mappings).

Without Transformer Engine the experts of a MoE layer are Megatron's ``SequentialMLP``
(``mlp.experts.local_experts.<i>.linear_fc1``), not the grouped GEMM
(``mlp.experts.linear_fc1.weight<i>``). Some of Bridge's model bridges map only the grouped
names (GLM-4-MoE, OLMoE); for those, a subclass adds the per-expert names, declared like Bridge's own mappings
(Bridge's Qwen3-MoE bridge declares both forms the same way).
"""

from __future__ import annotations

import functools


def _local_expert_mappings():
    from megatron.bridge.models.conversion.param_mapping import AutoMapping, GatedMLPMapping

    return [
        GatedMLPMapping(
            megatron_param="decoder.layers.*.mlp.experts.local_experts.*.linear_fc1.weight",
            gate="model.layers.*.mlp.experts.*.gate_proj.weight",
            up="model.layers.*.mlp.experts.*.up_proj.weight",
        ),
        AutoMapping(
            megatron_param="decoder.layers.*.mlp.experts.local_experts.*.linear_fc2.weight",
            hf_param="model.layers.*.mlp.experts.*.down_proj.weight",
        ),
    ]


def _with_local_experts(bridge_class):
    """A subclass of ``bridge_class`` whose mapping registry also maps per-expert weights."""
    from megatron.bridge.models.conversion.mapping_registry import MegatronMappingRegistry

    class LocalExpertsBridge(bridge_class):
        def mapping_registry(self) -> MegatronMappingRegistry:
            base = super().mapping_registry()
            return MegatronMappingRegistry(*base.mappings, *_local_expert_mappings())

    LocalExpertsBridge.__name__ = f"{bridge_class.__name__}LocalExperts"
    LocalExpertsBridge.__qualname__ = LocalExpertsBridge.__name__
    return LocalExpertsBridge


def mixtral_bridge():
    """Mixtral (``MixtralForCausalLM``): Llama attention, every layer a softmax top-k MoE of
    SwiGLU experts (``block_sparse_moe.experts.<i>.w1/w3/w2``), router aux loss."""
    from megatron.bridge.models.conversion.mapping_registry import MegatronMappingRegistry
    from megatron.bridge.models.conversion.model_bridge import MegatronModelBridge
    from megatron.bridge.models.conversion.param_mapping import (
        AutoMapping,
        GatedMLPMapping,
        QKVMapping,
    )

    class MixtralBridge(MegatronModelBridge):
        def provider_bridge(self, hf_pretrained):
            provider = super().provider_bridge(hf_pretrained)  # Bridge's CONFIG_MAPPING
            provider.normalization = "RMSNorm"
            provider.gated_linear_unit = True
            provider.add_bias_linear = False
            provider.add_qkv_bias = False
            provider.qk_layernorm = False
            provider.moe_ffn_hidden_size = hf_pretrained.config.intermediate_size
            # Mixtral: softmax over all experts, top-k, renormalised = softmax over the top-k.
            provider.moe_router_pre_softmax = False
            provider.moe_router_load_balancing_type = "aux_loss"
            return provider

        def mapping_registry(self) -> MegatronMappingRegistry:
            layer, moe = "model.layers.*", "model.layers.*.block_sparse_moe"
            names = {
                "embedding.word_embeddings.weight": "model.embed_tokens.weight",
                "output_layer.weight": "lm_head.weight",
                "decoder.final_layernorm.weight": "model.norm.weight",
                "decoder.layers.*.self_attention.linear_qkv.layer_norm_weight":
                    f"{layer}.input_layernorm.weight",
                "decoder.layers.*.self_attention.linear_proj.weight":
                    f"{layer}.self_attn.o_proj.weight",
                "decoder.layers.*.pre_mlp_layernorm.weight":
                    f"{layer}.post_attention_layernorm.weight",
                "decoder.layers.*.mlp.router.weight": f"{moe}.gate.weight",
            }  # fmt: skip
            experts = {  # grouped GEMM (with Transformer Engine) and SequentialMLP names
                "decoder.layers.*.mlp.experts.linear_fc{}.weight*": f"{moe}.experts.*",
                "decoder.layers.*.mlp.experts.local_experts.*.linear_fc{}.weight":
                    f"{moe}.experts.*",
            }  # fmt: skip
            mappings = [AutoMapping(megatron_param=m, hf_param=h) for m, h in names.items()]
            mappings.append(QKVMapping(
                megatron_param="decoder.layers.*.self_attention.linear_qkv.weight",
                q=f"{layer}.self_attn.q_proj.weight", k=f"{layer}.self_attn.k_proj.weight",
                v=f"{layer}.self_attn.v_proj.weight",
            ))  # fmt: skip
            for megatron, hf in experts.items():
                mappings += [
                    GatedMLPMapping(megatron_param=megatron.format(1), gate=f"{hf}.w1.weight",
                                    up=f"{hf}.w3.weight"),
                    AutoMapping(megatron_param=megatron.format(2), hf_param=f"{hf}.w2.weight"),
                ]  # fmt: skip
            return MegatronMappingRegistry(*mappings)

    return MixtralBridge


@functools.cache
def register_bridges() -> None:
    """Once per process, after ``megatron.bridge`` is imported."""
    from megatron.bridge.models.conversion.model_bridge import (
        MegatronModelBridge,
        register_bridge_implementation,
    )
    from megatron.bridge.models.glm.glm45_bridge import GLM45Bridge
    from megatron.bridge.models.olmoe.olmoe_bridge import OlMoEBridge
    from megatron.core.models.gpt.gpt_model import GPTModel
    from transformers import Glm4MoeForCausalLM, MixtralForCausalLM, OlmoeForCausalLM

    for source, bridge in ((Glm4MoeForCausalLM, GLM45Bridge), (OlmoeForCausalLM, OlMoEBridge)):
        register_bridge_implementation(
            source=source, target=GPTModel, bridge_class=_with_local_experts(bridge)
        )
    MegatronModelBridge.register_bridge(
        source=MixtralForCausalLM, target=GPTModel, model_type="mixtral"
    )(mixtral_bridge())
    register_module_types()


def register_module_types() -> None:
    """How our torch modules are split over tensor-parallel ranks, for Bridge's mappings: the
    core attention's sinks by head (GPT-OSS), OLMoE's Q/K norms by feature, Gemma's norms and
    post-normed projections."""
    from megatron.bridge.models.conversion.param_mapping import AutoMapping

    AutoMapping.register_module_type("TorchCoreAttention", "column")
    AutoMapping.register_module_type("SplitRMSNorm", "column")
    AutoMapping.register_module_type("ZeroCenteredRMSNorm", "replicated")
    AutoMapping.register_module_type("RowParallelLinearPostNorm", "row")
