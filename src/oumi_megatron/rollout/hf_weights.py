"""Copy ``(hf_name, tensor)`` pairs into a transformers model, by ``state_dict()`` name.

Checkpoint names are accepted too where transformers 5 keeps a different in-memory layout:
MoE experts live fused as ``...experts.gate_up_proj`` [E, 2I, H] (gate rows first) and
``...experts.down_proj`` [E, H, I], while checkpoints, HF exports and vLLM use per-expert
``...experts.{e}.{gate,up,down}_proj.weight``. Such a name is copied into its slice.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

import torch


class WeightUpdateError(ValueError):
    """A pushed weight does not fit the rollout model (unknown name or wrong shape)."""


def named_targets(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every name a weight can arrive under, mapped to the tensor to copy into.

    ``remove_duplicate=False`` keeps aliases: with tied embeddings both
    ``model.embed_tokens.weight`` and ``lm_head.weight`` resolve to the one shared parameter,
    so either name (or both) may be pushed.
    """
    targets: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    # Persistent buffers are part of a checkpoint too (non-persistent ones, e.g. rotary
    # inv_freq, are derived from the config and never sent).
    state_names = set(model.state_dict(keep_vars=True))
    for name, buffer in model.named_buffers(remove_duplicate=False):
        if name in state_names:
            targets[name] = buffer
    return targets


_EXPERT = re.compile(r"^(.+\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")


def _fused_expert_slice(targets: dict[str, torch.Tensor], name: str) -> torch.Tensor | None:
    """The view of a fused expert tensor that checkpoint name ``name`` maps to, if any."""
    match = _EXPERT.match(name)
    if match is None:
        return None
    prefix, expert, proj = match.group(1), int(match.group(2)), match.group(3)
    fused = targets.get(f"{prefix}.{'down_proj' if proj == 'down_proj' else 'gate_up_proj'}")
    if fused is None or fused.dim() != 3 or expert >= fused.shape[0]:
        return None
    if proj == "down_proj":
        return fused[expert]
    half = fused.shape[1] // 2
    return fused[expert, :half] if proj == "gate_proj" else fused[expert, half:]


def copy_named_tensors(
    targets: dict[str, torch.Tensor], named_tensors: Iterable[tuple[str, torch.Tensor]]
) -> int:
    """Copy each tensor into ``targets[name]`` (casting dtype/device); returns the count."""
    count = 0
    with torch.no_grad():
        for name, tensor in named_tensors:
            target = targets.get(name)
            if target is None:
                target = _fused_expert_slice(targets, name)
            if target is None:
                close = difflib.get_close_matches(name, list(targets), n=3)
                hint = f"; closest names: {close}" if close else ""
                raise WeightUpdateError(f"unknown weight {name!r} for the rollout model{hint}")
            if tuple(target.shape) != tuple(tensor.shape):
                raise WeightUpdateError(
                    f"shape mismatch for {name!r}: rollout model has {tuple(target.shape)}, "
                    f"got {tuple(tensor.shape)}"
                )
            target.copy_(tensor)
            count += 1
    return count
