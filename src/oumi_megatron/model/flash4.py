"""FlashAttention-4 for the update's attention: the ``flash-attn-4`` package's kernels (CuTe DSL,
for Hopper and Blackwell) as opaque ops, so that compiled layers keep one graph. Packed rows
(`varlen_attention`) and padded rows without a mask (`dense_attention`, read and written in
Megatron's [seq, batch, heads, dim] layout without copies).

Where it applies (`usable`): CUDA tensors of compute capability 9 or 10, half precision, head
width 64, 96 or 128, the package installed (the ``gpu`` extra), and
``OUMI_MEGATRON_FLASH_ATTENTION`` not set to ``fa2``. Elsewhere the core attention keeps
torch's kernels (FlashAttention-2 varlen, SDPA). Both take the fewer K/V heads of grouped-query
attention as they are.

The package's own entry point is an autograd function that `torch.compile` cannot trace; here
its forward and backward kernels are each a `torch.library` op with a fake (shape-only)
implementation, and the pair is tied by `register_autograd`. The kernels compile on first use
per configuration and are kept for the process.
"""

from __future__ import annotations

import functools
import os

import torch

FLASH_ENV = "OUMI_MEGATRON_FLASH_ATTENTION"
_CAPABILITIES = (9, 10)
# Head widths its kernels are built and tested for; others (e.g. a tiny test model's 16) fail
# in the kernel compiler, so they keep torch's kernels.
HEAD_DIMS = (64, 96, 128)


def usable(query: torch.Tensor) -> bool:
    """FlashAttention-4 can run this attention call (see the module docstring)."""
    half = query.dtype in (torch.bfloat16, torch.float16)
    width = query.shape[-1] in HEAD_DIMS
    return query.is_cuda and half and width and _enabled(query.device.index)


@functools.cache
def _enabled(index: int | None) -> bool:
    """Decided once per process and device (also where compiled layers ask)."""
    if os.environ.get(FLASH_ENV, "auto").lower() == "fa2":
        return False
    if torch.cuda.get_device_capability(index)[0] not in _CAPABILITIES:
        return False
    try:
        from flash_attn.cute import interface  # noqa: F401
    except ImportError:
        return False
    return True


def _window(window: int) -> tuple[int | None, int | None]:
    """Our window (keys back, -1 for none) in the kernels' (left, right) form, causal."""
    return (None, None) if window < 0 else (window, 0)


def _kernel_view(t: torch.Tensor, packed: bool) -> torch.Tensor:
    """The kernels' layout: packed [tokens, heads, dim] as it is; Megatron's padded rows
    [seq, batch, heads, dim] as a [batch, seq, heads, dim] view (no copy)."""
    return t if packed else t.transpose(0, 1)


def _lengths(cu_seqlens: torch.Tensor | None, max_len: int) -> dict:
    packed = cu_seqlens is not None
    length = max_len if packed else None
    return dict(cu_seqlens_q=cu_seqlens, cu_seqlens_k=cu_seqlens, max_seqlen_q=length,
                max_seqlen_k=length)  # fmt: skip


@torch.library.custom_op("oumi_megatron::fa4_fwd", mutates_args=(), device_types="cuda")
def _forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor | None,
    max_len: int, scale: float, window: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    from flash_attn.cute.interface import _flash_attn_fwd

    packed = cu_seqlens is not None
    out = q.new_empty((*q.shape[:-1], v.shape[-1]))  # written in the caller's layout
    left, right = _window(window)
    _, lse, *_ = _flash_attn_fwd(
        *(_kernel_view(t, packed) for t in (q, k, v)), softmax_scale=scale, causal=True,
        window_size_left=left, window_size_right=right, return_lse=True,
        out=_kernel_view(out, packed), **_lengths(cu_seqlens, max_len),
    )  # fmt: skip
    return out, lse


@_forward.register_fake
def _forward_fake(q, k, v, cu_seqlens, max_len, scale, window):
    out = q.new_empty((*q.shape[:-1], v.shape[-1]))
    if cu_seqlens is not None:  # [heads, tokens]
        return out, q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)
    return out, q.new_empty((q.shape[1], q.shape[2], q.shape[0]), dtype=torch.float32)


@torch.library.custom_op("oumi_megatron::fa4_bwd", mutates_args=(), device_types="cuda")
def _backward_op(
    grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
    lse: torch.Tensor, cu_seqlens: torch.Tensor | None, max_len: int, scale: float, window: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    from flash_attn.cute.interface import _flash_attn_bwd

    packed = cu_seqlens is not None
    grads = [t.new_empty(t.shape) for t in (q, k, v)]  # contiguous in the caller's layout
    left, right = _window(window)
    view = [_kernel_view(t, packed) for t in (q, k, v, out, grad)]
    _flash_attn_bwd(
        *view, lse, scale, True, 0.0, window_size_left=left, window_size_right=right,
        dq=_kernel_view(grads[0], packed), dk=_kernel_view(grads[1], packed),
        dv=_kernel_view(grads[2], packed), **_lengths(cu_seqlens, max_len),
    )  # fmt: skip
    return tuple(grads)


@_backward_op.register_fake
def _backward_fake(grad, q, k, v, out, lse, cu_seqlens, max_len, scale, window):
    return tuple(t.new_empty(t.shape) for t in (q, k, v))


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, cu_seqlens, max_len, scale, window = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu_seqlens)
    ctx.max_len, ctx.scale, ctx.window = max_len, scale, window


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, cu_seqlens = ctx.saved_tensors
    dq, dk, dv = _backward_op(grad_out, q, k, v, out, lse, cu_seqlens, ctx.max_len, ctx.scale,
                              ctx.window)  # fmt: skip
    return dq, dk, dv, None, None, None, None


_forward.register_autograd(_backward, setup_context=_setup_context)


def varlen_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_len: int,
    scale: float, window: int | None = None,
) -> torch.Tensor:  # fmt: skip
    """Causal attention within each packed sequence (and at most ``window`` keys back):
    q [tokens, heads, dim], k/v [tokens, kv_heads, dim] (views with a contiguous last
    dimension are read as they are), ``cu_seqlens`` int32 boundaries. Returns
    [tokens, heads, dim]."""
    out, _ = _forward(q, k, v, cu_seqlens, int(max_len), float(scale),
                      -1 if window is None else int(window))  # fmt: skip
    return out


def dense_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, window: int | None = None
) -> torch.Tensor:
    """Causal attention over rows without a mask, in Megatron's layout: q [seq, batch, heads,
    dim], k/v [seq, batch, kv_heads, dim]. Returns [seq, batch, heads, dim] (contiguous)."""
    out, _ = _forward(q, k, v, None, 0, float(scale), -1 if window is None else int(window))
    return out
