"""Which layers attend through a sliding window, read from the Hugging Face config.

Hugging Face lists each layer's kind (``layer_types``: ``sliding_attention`` or
``full_attention``; Gemma 2/3, Qwen2 with ``use_sliding_window``) or applies
``sliding_window`` to every layer (Mistral, Mixtral). Megatron's config says the same with
``window_size = (left, 0)`` and ``window_attn_skip_freq`` (one flag per layer: 1 windowed, 0
full), which our core attention reads (``model.attention``). A key is visible to a query at
most ``sliding_window - 1`` positions back, as in Hugging Face's masks.
"""

from __future__ import annotations


def window_flags(hf_config) -> list[int] | None:
    """One flag per layer (1: sliding window), or None when no layer has a window."""
    window = getattr(hf_config, "sliding_window", None)
    layers = hf_config.num_hidden_layers
    if not window:
        return None
    types = getattr(hf_config, "layer_types", None)
    if types is not None:
        flags = [int(kind == "sliding_attention") for kind in types]
    elif getattr(hf_config, "use_sliding_window", True):
        flags = [1] * layers
    else:
        return None
    return flags if any(flags) else None


def apply_windows(provider, hf_config) -> None:
    """Set the provider's window fields from ``hf_config`` (no window: both None)."""
    flags = window_flags(hf_config)
    if flags is None:
        provider.window_size = None
        provider.window_attn_skip_freq = None
        return
    provider.window_size = (int(hf_config.sliding_window) - 1, 0)
    provider.window_attn_skip_freq = None if all(flags) else flags
    if hasattr(provider, "interleaved_attn_pattern"):  # Gemma 3: local/global rotary bases
        provider.interleaved_attn_pattern = interleaved_pattern(flags)


def interleaved_pattern(flags: list[int]) -> tuple[int, int]:
    """Bridge's Gemma 3 attention picks the local rotary base for layer ``n`` (1-based) when
    ``n % (local + global) != 0``: the (local, global) pattern that reproduces ``flags``."""
    full = [n for n, windowed in enumerate(flags, start=1) if not windowed]
    if not full:
        return (len(flags), 1)  # no layer number reaches the period: every layer local
    period = full[0]
    if full != list(range(period, len(flags) + 1, period)):
        raise ValueError(
            f"layer_types puts full attention at layers {full} (1-based): only a repeating "
            f"pattern (every Nth layer) is supported for Gemma 3's local/global rotary bases. "
            f"Fix: use a config whose full-attention layers repeat, as the published Gemma 3 "
            f"models' do."
        )
    return (period - 1, 1)


def layer_window(config, layer_number: int) -> int | None:
    """Keys visible before the query in layer ``layer_number`` (1-based, over the whole model),
    or None for full causal attention."""
    from megatron.core.transformer.utils import is_layer_window_attention

    window = getattr(config, "window_size", None)
    skip = getattr(config, "window_attn_skip_freq", None)
    if not is_layer_window_attention(window, skip, layer_number):
        return None
    return int(window[0])
