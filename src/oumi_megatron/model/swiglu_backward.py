"""The fused SwiGLU's backward in one pass over the MLP's width that writes both halves (CUDA).

Megatron's fused SwiGLU (`fused_bias_swiglu.swiglu_back`, compiled) returns
``cat((d_gate, d_up), -1)``. Inductor lowers a concatenation of two unrealised expressions as
one pointwise kernel over the whole [tokens, 2·ffn] gradient in which every element evaluates
both halves' expressions (two sigmoids) and keeps one, with masked loads for each. At
Qwen2.5-1.5B's width (16,384 tokens × 2 × 8,960) that kernel took 651 µs per layer and
micro-batch on an H100 against the 438 µs it takes to move its bytes.

Here one Triton program per row block reads gate, up and the output's gradient once and writes
the two halves of the input's gradient: one sigmoid per (token, feature), the same formula in
fp32 as Megatron's, rounded once to the gradient's dtype (493 µs per call at that width;
the update 1.015× faster, docs/benchmarks.md). A `torch.library.triton_op`, so that compiled
layers keep the kernel inside their graph. Elsewhere (CPU) Megatron's function runs.

The default where the fused SwiGLU runs (GPU); ``OUMI_MEGATRON_SWIGLU_BACKWARD=megatron`` keeps
Megatron's backward.
"""

from __future__ import annotations

import functools
import os

import torch

SWIGLU_ENV = "OUMI_MEGATRON_SWIGLU_BACKWARD"
DEFAULT = "triton"

BLOCK = 1024  # features per program: 8 bf16 per thread at 4 warps


def swiglu_back(g: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Megatron's `swiglu_back(g, y)`: the gradient of ``silu(gate) * up`` at ``y = [gate, up]``
    (last dimension) given the output's gradient ``g``."""
    if y.is_cuda and y.dtype in (torch.bfloat16, torch.float16, torch.float32):
        return torch.ops.oumi_megatron.swiglu_backward(g, y)  # registered by the install
    from oumi_megatron import patches

    return patches.remember("swiglu-backward")(g, y)


@functools.cache
def register_op() -> None:
    """Define ``oumi_megatron::swiglu_backward`` (once; Triton is imported only here)."""
    from torch.library import triton_op, wrap_triton

    launch = wrap_triton(kernel())

    @triton_op("oumi_megatron::swiglu_backward", mutates_args=())
    def swiglu_backward(g: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return backward_with(launch, g, y)


def backward_with(launch, g: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The gradient, computed by ``launch`` (`kernel`, wrapped for the op, or as it is under
    Triton's interpreter)."""
    import triton

    width = y.shape[-1] // 2
    y2 = y.contiguous().view(-1, 2 * width)
    g2 = g.contiguous().view(-1, width)
    out = torch.empty_like(y2)
    if y2.shape[0]:
        grid = (y2.shape[0], triton.cdiv(width, BLOCK))
        launch[grid](g2, y2, out, width, BLOCK=BLOCK, num_warps=4)
    return out.view(y.shape)


@functools.cache
def kernel():
    """One program per (row, block of ``BLOCK`` features)."""
    import triton
    import triton.language as tl

    @triton.jit
    def swiglu_backward_kernel(g_ptr, y_ptr, out_ptr, width, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        inside = cols < width
        y_row = y_ptr + row * 2 * width
        gate = tl.load(y_row + cols, mask=inside).to(tl.float32)
        up = tl.load(y_row + width + cols, mask=inside).to(tl.float32)
        grad = tl.load(g_ptr + row * width + cols, mask=inside).to(tl.float32)
        sig = tl.sigmoid(gate)
        d_gate = grad * sig * (1 + gate * (1 - sig)) * up
        d_up = grad * (gate * sig)
        out_row = out_ptr + row * 2 * width
        tl.store(out_row + cols, d_gate.to(out_ptr.dtype.element_ty), mask=inside)
        tl.store(out_row + width + cols, d_up.to(out_ptr.dtype.element_ty), mask=inside)

    return swiglu_backward_kernel


def chosen() -> bool:
    """Whether ``OUMI_MEGATRON_SWIGLU_BACKWARD`` (or the default) asks for the Triton pass; by
    default only where Triton is installed (it comes with torch's CUDA builds on Linux)."""
    import importlib.util

    choice = os.environ.get(SWIGLU_ENV, DEFAULT).lower()
    if choice not in ("triton", "megatron"):
        raise ValueError(f"{SWIGLU_ENV}={choice!r}: use 'triton' or 'megatron'")
    if SWIGLU_ENV not in os.environ and importlib.util.find_spec("triton") is None:
        return False
    return choice == "triton"


def install_swiglu_backward() -> None:
    """Route Megatron's fused SwiGLU backward through `swiglu_back` (idempotent; where the
    fused SwiGLU runs, i.e. on GPU, and `chosen`)."""
    from megatron.core.fusions import fused_bias_swiglu

    from oumi_megatron import patches

    patches.check("swiglu-backward")
    register_op()
    fused_bias_swiglu.swiglu_back = swiglu_back
