"""Weight gradients added to Megatron's gradient buffer by the weight-gradient GEMM itself.

Megatron's DDP keeps each parameter's gradient in a flat buffer (``param.main_grad``). Without
fusion, every linear layer's backward writes its weight gradient to a new tensor, and a hook
then adds it to ``main_grad``: per micro-batch, one more pass over all weight gradients (read the
new tensor, read and write the buffer). Megatron's ``gradient_accumulation_fusion`` instead has
the GEMM accumulate into ``main_grad`` (``C = A·B + C``), but only with Apex's
``fused_weight_gradient_mlp_cuda`` extension, and its backward sets attributes on the weight,
which `torch.compile` refuses to trace inside a compiled layer.

Here the same accumulation is one cuBLAS call (`torch.addmm` into ``main_grad``, beta = 1; with
fp32 gradient buffers and bf16 operands through ``out_dtype``) wrapped as a `torch.library` op
that declares its mutation, so compiled layers keep one graph and inductor calls it in place.
The weight's gradient to autograd is then a placeholder, and Megatron's own protocol tells its
DDP hook not to add it (``grad_added_to_main_grad``; set here by a pre-hook on the weight's
gradient accumulator, not inside the compiled backward). Pipeline schedules that run several
forwards before their backwards are fine: ``main_grad`` is kept on the autograd context, not
among the saved tensors whose versions autograd checks (as Megatron does).

Applied to the linear layers of the transformer layers (attention and MLP, experts included)
whose weight belongs to them alone and whose backward needs no tensor-parallel collective
of its own (row-parallel layers, and column-parallel ones at TP 1); the output layer (whose
weight may be tied to the embedding) and layers that all-reduce their input gradient keep
Megatron's path. `install` decides once per layer; the choice never changes during a run.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor


@torch.library.custom_op("oumi_megatron::accumulate_wgrad_", mutates_args=("main_grad",))
def accumulate_wgrad_(main_grad: Tensor, grad_output: Tensor, total_input: Tensor) -> None:
    """``main_grad += grad_outputᵀ · total_input`` (2-D operands [tokens, out] and [tokens, in])
    in one GEMM, accumulating in fp32 and rounding once into ``main_grad``'s dtype."""
    if main_grad.dtype == grad_output.dtype:
        main_grad.addmm_(grad_output.t(), total_input)
    elif main_grad.is_cuda:
        torch.addmm(
            main_grad, grad_output.t(), total_input, out_dtype=main_grad.dtype, out=main_grad
        )
    else:  # no mixed-dtype GEMM on the CPU: the operands in main_grad's dtype
        main_grad.addmm_(grad_output.t().to(main_grad.dtype), total_input.to(main_grad.dtype))


@accumulate_wgrad_.register_fake
def _(main_grad: Tensor, grad_output: Tensor, total_input: Tensor) -> None:
    return None


class FusedWgradLinear(torch.autograd.Function):
    """``input · weightᵀ (+ bias)``; the backward accumulates the weight's gradient into
    ``main_grad`` and hands autograd an uninitialised placeholder for it."""

    @staticmethod
    def forward(ctx, input: Tensor, weight: Tensor, bias: Tensor | None, main_grad: Tensor):
        ctx.save_for_backward(input, weight)
        ctx.main_grad = main_grad  # mutated by later backwards: no version check (see module)
        ctx.use_bias = bias is not None
        output = torch.matmul(input, weight.t())
        return output + bias if bias is not None else output

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        input, weight = ctx.saved_tensors
        grad_input = grad_output.matmul(weight)
        rows = grad_output.reshape(-1, grad_output.shape[-1])
        accumulate_wgrad_(ctx.main_grad, rows, input.reshape(-1, input.shape[-1]))
        grad_bias = rows.sum(dim=0) if ctx.use_bias else None
        return grad_input, torch.empty_like(weight), grad_bias, None


def fusable(module: torch.nn.Module) -> bool:
    """Whether `module` (a Megatron column- or row-parallel linear layer inside a transformer
    layer, under DDP) always takes the fused path: its own trainable weight with a
    ``main_grad``, and a backward without collectives or deferred weight gradients."""
    from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear

    if not isinstance(module, ColumnParallelLinear | RowParallelLinear):
        return False
    weight = getattr(module, "weight", None)
    if weight is None or not weight.requires_grad or not hasattr(weight, "main_grad"):
        return False
    explicit = getattr(module, "explicit_expert_comm", False)
    if isinstance(module, ColumnParallelLinear):
        if module.allreduce_dgrad and not explicit:
            return False
        if module.sequence_parallel and not explicit:
            return False
    if module.config.defer_embedding_wgrad_compute:
        return False
    return getattr(module, "gtp_remat_size", 1) == 1


def install(chunks: list[torch.nn.Module]) -> int:
    """Route every `fusable` linear layer of the transformer layers of the DDP-wrapped model
    chunks through `FusedWgradLinear`; returns how many. Idempotent."""
    from megatron.core.transformer.transformer_layer import TransformerLayer

    count = 0
    for chunk in chunks:
        for layer in chunk.modules():
            if not isinstance(layer, TransformerLayer):
                continue
            for module in layer.modules():
                if fusable(module) and not getattr(module, "_oumi_fused_wgrad", False):
                    _route(module)
                    count += 1
    return count


def _route(module: torch.nn.Module) -> None:
    module._forward_impl = functools.partial(_fused_forward, module)
    module._oumi_fused_wgrad = True
    weight = module.weight
    # The gradient accumulator DDP hooks (kept alive by DDP's `grad_accs`); this pre-hook runs
    # before DDP's post-hook, after every `zero_grad_buffer` reset the flag.
    accumulator = weight.expand_as(weight).grad_fn.next_functions[0][0]
    accumulator.register_prehook(functools.partial(_mark_added, weight))


def _mark_added(weight: Tensor, grad_outputs) -> None:
    weight.grad_added_to_main_grad = True


def _fused_forward(module, input, weight, bias, *_, **__) -> Tensor:
    """Megatron's ``_forward_impl`` signature; `fusable` has ruled out what the other
    arguments (collectives, deferral) would ask for."""
    if weight is not module.weight:
        raise RuntimeError(
            f"{type(module).__name__} was given another weight than its own, so its fused "
            "weight-gradient accumulation would write into the wrong gradient buffer; set "
            "megatron.transformer_config.gradient_accumulation_fusion: false"
        )
    return FusedWgradLinear.apply(input, weight, bias, weight.main_grad)
