"""Model FLOPs per token, throughput and model FLOPs utilisation (MFU).

Accounting (same as Megatron-LM's ``num_floating_point_operations`` and the PaLM paper,
appendix B), per token of one training step (forward + backward = 3 x forward)::

    flops/token = 6 * N_active + 12 * L * s * q

* ``N_active``: weights of every matmul a token goes through:
  ``L * (2*h*q + 2*h*kv + m*h*f_active) + V*h`` with ``q = heads * head_dim`` (query width),
  ``kv = kv_heads * head_dim``, ``m = 3`` for a gated MLP (SwiGLU: gate, up, down) and 2
  otherwise, ``f_active = top_k * moe_ffn + shared_ffn`` for MoE layers (only the experts a
  token is routed to; the router is ignored, as in Megatron) and ``ffn`` for dense layers,
  ``V*h`` the output layer. Embedding lookups are not matmuls and are not counted.
* ``12 * L * s * q``: attention scores ``QK^T`` and ``softmax(.)V`` (2 FLOPs x 2 matmuls x 3
  passes), with every query counted against all ``s`` keys (no causal halving, as in
  Megatron and PaLM, so numbers compare with published MFU).

With packing, ``s`` is the length of each token's own sequence, not the packed row: pass
:func:`effective_seq_len` of the sequence lengths.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence

import torch

logger = logging.getLogger(__name__)

#: Environment override of the per-device peak FLOP/s (e.g. ``989e12``) for unknown hardware.
PEAK_FLOPS_ENV = "OUMI_MEGATRON_PEAK_FLOPS"

# Dense (no sparsity) BF16 tensor-core peak per device, from NVIDIA datasheets. First substring
# match of the device name wins, so specific variants come before their family.
_PEAK_BF16_DENSE: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H200 NVL", 835e12),
    ("GH200", 989e12),
    ("H100", 989e12),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
)


def estimate_flops_per_token(
    num_layers: int,
    hidden_size: int,
    ffn_hidden_size: int,
    num_attention_heads: int,
    num_kv_heads: int,
    vocab_size: int,
    seq_len: float,
    gated_mlp: bool = True,
    num_experts: int | None = None,
    moe_top_k: int | None = None,
    moe_ffn_hidden_size: int | None = None,
    *,
    kv_channels: int | None = None,
    shared_expert_ffn_hidden_size: int = 0,
    forward_only: bool = False,
) -> float:
    """Model FLOPs per token of a training step (see the module docstring for the formula).

    Args:
        num_experts / moe_top_k / moe_ffn_hidden_size: MoE in every layer; None = dense.
            ``moe_ffn_hidden_size`` defaults to ``ffn_hidden_size``.
        kv_channels: head dimension; None = ``hidden_size // num_attention_heads``.
        shared_expert_ffn_hidden_size: width of the always-active shared expert(s), MoE only.
        forward_only: FLOPs of a forward pass only (log-prob recomputation): one third.
    """
    if num_attention_heads % num_kv_heads:
        raise ValueError(f"num_attention_heads={num_attention_heads} % num_kv_heads != 0")
    head_dim = kv_channels if kv_channels is not None else hidden_size // num_attention_heads
    q_width = num_attention_heads * head_dim
    kv_width = num_kv_heads * head_dim
    mlp_matrices = 3 if gated_mlp else 2
    if num_experts is None:
        active_ffn = ffn_hidden_size
    else:
        if moe_top_k is None or not 1 <= moe_top_k <= num_experts:
            raise ValueError(f"MoE needs 1 <= moe_top_k <= num_experts, got {moe_top_k}")
        expert_ffn = moe_ffn_hidden_size if moe_ffn_hidden_size is not None else ffn_hidden_size
        active_ffn = moe_top_k * expert_ffn + shared_expert_ffn_hidden_size
    attn_weights = 2 * hidden_size * q_width + 2 * hidden_size * kv_width
    mlp_weights = mlp_matrices * hidden_size * active_ffn
    active_params = num_layers * (attn_weights + mlp_weights) + vocab_size * hidden_size
    attention_scores = 12 * num_layers * seq_len * q_width
    train_flops = 6 * active_params + attention_scores
    return train_flops / 3 if forward_only else float(train_flops)


def effective_seq_len(lengths: Sequence[int]) -> float:
    """Token-weighted mean sequence length ``sum(s^2) / sum(s)``: the ``seq_len`` that makes
    the attention term exact for a batch of (packed or padded) sequences of these lengths."""
    total = sum(lengths)
    return sum(n * n for n in lengths) / total if total else 0.0


def peak_flops_for_device(
    device: int | torch.device | None = None, override: float | None = None
) -> float | None:
    """Dense BF16 peak FLOP/s of one CUDA device; None on CPU or unknown GPUs (no MFU then).

    ``override`` (or the ``OUMI_MEGATRON_PEAK_FLOPS`` environment variable) wins over the table.
    """
    if override is not None:
        return float(override)
    if env := os.environ.get(PEAK_FLOPS_ENV):
        return float(env)
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    return peak_flops_for_name(name)


def peak_flops_for_name(device_name: str) -> float | None:
    """Table look-up of :func:`peak_flops_for_device` by device name (e.g. ``NVIDIA H200``)."""
    for key, flops in _PEAK_BF16_DENSE:
        if key.lower() in device_name.lower():
            return flops
    logger.warning(
        "Unknown peak FLOP/s for %r: MFU is not reported. Set %s to enable it.",
        device_name,
        PEAK_FLOPS_ENV,
    )
    return None


def tokens_per_second(num_tokens: float, seconds: float) -> float:
    """Throughput; NaN when ``seconds`` is not positive (logged as null)."""
    return num_tokens / seconds if seconds > 0 else math.nan


def mfu(
    tokens_per_second: float,
    flops_per_token: float,
    peak_flops: float | None,
    num_devices: int = 1,
) -> float | None:
    """Fraction of the peak reached: ``tokens/s * flops/token / (peak * num_devices)``.

    ``tokens_per_second`` is over all ``num_devices``; None when the peak is unknown (CPU).
    """
    if peak_flops is None or peak_flops <= 0:
        return None
    return tokens_per_second * flops_per_token / (peak_flops * num_devices)


def throughput_metrics(
    num_tokens: float,
    seconds: float,
    flops_per_token: float,
    peak_flops: float | None = None,
    num_devices: int = 1,
) -> dict[str, float]:
    """``perf/*`` metrics of one step; ``perf/mfu`` only when the peak is known (GPU)."""
    tps = tokens_per_second(num_tokens, seconds)
    out = {
        "perf/tokens_per_second": tps,
        "perf/tokens_per_second_per_device": tps / num_devices,
        "perf/tflops_per_device": tps * flops_per_token / num_devices / 1e12,
    }
    value = mfu(tps, flops_per_token, peak_flops, num_devices)
    if value is not None:
        out["perf/mfu"] = value
    return out
