"""`torch.compile` of each transformer layer (GPU): fuses the norms, RoPE, SwiGLU and residual
element-wise work that Transformer Engine would otherwise fuse. Layers are compiled one by one
(not the whole model), so Megatron's pipeline schedule, hooks and collectives stay eager.

Each layer is meant to be one graph, forward and backward: host time per layer is what limits a
small model's step on a fast GPU. The core attention is traced too (flash varlen attention is
one custom op; the sequences' longest length comes from the host), the packed RoPE has no
graph break (`model.rope`), and the deprecation warning Megatron's row-parallel linear layers
raise on every forward (they pass no process group) is skipped while tracing, where it would
split the graph (patch ``quiet-row-linear-group``; eager code still warns). Under sequence
parallelism the linear layers and their collectives, and in MoE layers the routing, dispatch
and experts, run eagerly between compiled pieces (`_sequence_parallel_linears_eager`,
`_moe_eager`).
"""

from __future__ import annotations

import torch
from megatron.core import parallel_state  # imported only where layers are compiled

from oumi_megatron import patches


def _group_if_none(tp_group, is_expert=False, check_initialized=True):
    """Megatron's default tensor-parallel group lookup, without its warning while compiling
    (called by every row-parallel linear layer's forward, compiled or not)."""
    if tp_group is None and torch.compiler.is_compiling() and parallel_state.is_initialized():
        if is_expert:
            return parallel_state.get_expert_tensor_parallel_group(check_initialized)
        return parallel_state.get_tensor_model_parallel_group(check_initialized)
    return patches.remember("quiet-row-linear-group")(tp_group, is_expert, check_initialized)


def install_quiet_row_linear_group() -> None:
    """Route the row-parallel linear layers' group lookup through `_group_if_none` (idempotent)."""
    from megatron.core.tensor_parallel import layers

    patches.check("quiet-row-linear-group")
    layers.get_tensor_model_parallel_group_if_none = _group_if_none


def compile_transformer_layers(chunks: list[torch.nn.Module], dynamic: bool | None = None) -> int:
    """Compile every `TransformerLayer` of the model chunks in place; returns how many.

    ``dynamic=None`` lets torch specialise on the first shape and turn dynamic when shapes
    change (packed micro-batches of varying length). Each layer's input is given the same
    strides before the compiled forward sees it (`_same_strides`), so that the first layer
    (fed by the embedding) and the others (fed by a layer) share one graph."""
    from megatron.core.transformer.transformer_layer import TransformerLayer

    install_quiet_row_linear_group()
    count = 0
    for chunk in chunks:
        for module in chunk.modules():
            if isinstance(module, TransformerLayer):
                _sequence_parallel_linears_eager(module)
                _moe_eager(module)
                module.forward = torch.compile(module.forward, dynamic=dynamic)
                module.register_forward_pre_hook(_same_strides, with_kwargs=True)
                count += 1
    return count


def _sequence_parallel_linears_eager(layer: torch.nn.Module) -> None:
    """Under sequence parallelism a column-parallel layer all-gathers its input over TP into
    Megatron's shared buffer, in the forward and again, asynchronously, in the backward.
    torch.compile cannot trace asynchronous collectives, and a layer traced around them got
    wrong gradients (CPU, TP2: gradient norm 2.26 against 6.63 eager). Those layers' matrix
    multiply with its collectives runs eagerly, outside the graph (a graph break before and
    after each); the norms, RoPE, attention, SwiGLU and residual work between them stay
    compiled. The row-parallel layers, which reduce-scatter their output, run eagerly too."""
    from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear

    linears = (ColumnParallelLinear, RowParallelLinear)
    for module in layer.modules():
        if isinstance(module, linears) and module.sequence_parallel:
            _run_eagerly(module)


def _moe_eager(layer: torch.nn.Module) -> None:
    """A MoE layer's routing, token dispatch and experts run eagerly: Megatron's dispatcher
    reads token counts to the host (`.item()`, a graph break) and the traced remainder failed
    (`masked_select` on a non-boolean mask, Qwen3-MoE at EP2 on CPU). The attention half of the
    layer stays compiled."""
    from megatron.core.transformer.moe.moe_layer import MoELayer

    mlp = getattr(layer, "mlp", None)
    if isinstance(mlp, MoELayer):
        _run_eagerly(mlp)


def _run_eagerly(module: torch.nn.Module) -> None:
    """``module``'s forward outside the compiled graph of the layer holding it (idempotent)."""
    if not getattr(module, "_oumi_eager", False):
        module.forward = torch.compiler.disable(module.forward)
        module._oumi_eager = True


def _same_strides(module, args, kwargs):
    """`hidden_states` [s, b, h] with its contiguous strides: a size-1 batch dimension can carry
    any stride (the embedding's output and a layer's differ), and torch.compile guards on it."""
    hidden = kwargs.get("hidden_states")
    if hidden is not None and hidden.is_contiguous():
        kwargs["hidden_states"] = hidden.view(-1).view(hidden.shape)
    return args, kwargs
