"""Megatron-Bridge mappings the trainer adds, through Bridge's own registration API.

Without Transformer Engine the experts of a MoE layer are Megatron's ``SequentialMLP``
(``mlp.experts.local_experts.<i>.linear_fc1``), not the grouped GEMM
(``mlp.experts.linear_fc1.weight<i>``). Some of Bridge's model bridges map only the grouped
names; for those, a subclass adds the per-expert names, declared like Bridge's own mappings
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


@functools.cache
def register_bridges() -> None:
    """Once per process, after ``megatron.bridge`` is imported."""
    from megatron.bridge.models.conversion.model_bridge import register_bridge_implementation
    from megatron.bridge.models.glm.glm45_bridge import GLM45Bridge
    from megatron.core.models.gpt.gpt_model import GPTModel
    from transformers import Glm4MoeForCausalLM

    register_bridge_implementation(
        source=Glm4MoeForCausalLM, target=GPTModel, bridge_class=_with_local_experts(GLM45Bridge)
    )
