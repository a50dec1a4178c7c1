"""`torch.compile` of each transformer layer (GPU): fuses the norms, RoPE, SwiGLU and residual
element-wise work that Transformer Engine would otherwise fuse. Layers are compiled one by one
(not the whole model), so Megatron's pipeline schedule, hooks and collectives stay eager. The
core attention stays eager too: it is one opaque flash kernel already, and its packed path
reads the sequences' boundaries (a graph break either way)."""

from __future__ import annotations

import torch


def compile_transformer_layers(chunks: list[torch.nn.Module], dynamic: bool | None = None) -> int:
    """Compile every `TransformerLayer` of the model chunks in place; returns how many.

    ``dynamic=None`` lets torch specialise on the first shape and turn dynamic when shapes
    change (packed micro-batches of varying length)."""
    from megatron.core.transformer.transformer_layer import TransformerLayer

    count = 0
    for chunk in chunks:
        for module in chunk.modules():
            if isinstance(module, TransformerLayer):
                core = getattr(getattr(module, "self_attention", None), "core_attention", None)
                if core is not None:
                    core.forward = torch.compiler.disable(core.forward)
                module.compile(dynamic=dynamic)
                count += 1
    return count
