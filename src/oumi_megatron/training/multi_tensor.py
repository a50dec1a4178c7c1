"""Megatron's multi-tensor gradient norm and scaling without Transformer Engine or Apex, on
torch's ``_foreach`` kernels.

Without TE or Apex, Megatron falls back to Python loops (``megatron.core.utils.local_multi_tensor_*``):
the gradient norm turns every parameter's norm into a Python float (one device sync per
parameter: ~200 for a 1.5B model, each leaving the GPU idle) and the scaling launches two
kernels per parameter. Here the norm stays on the device (``torch._foreach_norm``, one sync
left: the clipping coefficient Megatron reads on the host) and scaling is one ``_foreach``
call per list. Same values: the norm of the per-tensor norms, in fp32. Installed only where
Megatron uses its fallbacks (patches ``multi-tensor-l2norm``, ``multi-tensor-scale*``).
"""

from __future__ import annotations

import torch


def foreach_l2_norm(chunk_size, noop_flag, tensor_lists, per_tensor, *args):
    """Drop-in for ``local_multi_tensor_l2_norm``: (the global L2 norm as a 1-element fp32
    tensor on the tensors' device, None)."""
    norms = [norm for tensors in tensor_lists if tensors for norm in torch._foreach_norm(tensors)]
    if not norms:
        return torch.zeros(1, dtype=torch.float), None
    total = torch.linalg.vector_norm(torch.stack(norms).float())
    return total.reshape(1), None


def foreach_scale(chunk_size, noop_flag, tensor_lists, scale):
    """Drop-in for ``local_multi_tensor_scale``: ``dst = src * scale`` for each pair."""
    sources, destinations = tensor_lists[0], tensor_lists[1]
    if not sources:
        return
    if all(s is d for s, d in zip(sources, destinations, strict=True)):
        torch._foreach_mul_(destinations, scale)
    elif scale == 1.0:
        torch._foreach_copy_(destinations, sources)
    else:
        torch._foreach_copy_(destinations, torch._foreach_mul(sources, scale))


def install_foreach_multi_tensor_ops() -> bool:
    """Replace Megatron's local (Python-loop) fallbacks by the ``_foreach`` versions above,
    where Megatron uses them (idempotent); returns whether it did."""
    from megatron.core import utils

    from oumi_megatron import patches

    if patches.remember("multi-tensor-l2norm") is not utils.local_multi_tensor_l2_norm:
        return False  # Transformer Engine or Apex provides the fused kernels
    patches.check("multi-tensor-l2norm")
    patches.check("multi-tensor-scale-clip")
    patches.check("multi-tensor-scale-optimizer")
    from megatron.core.optimizer import clip_grads, optimizer

    clip_grads.l2_norm_impl = foreach_l2_norm
    clip_grads.multi_tensor_scale_impl = foreach_scale
    optimizer.multi_tensor_scale_impl = foreach_scale
    return True
