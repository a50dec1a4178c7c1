"""Copy ``(hf_name, tensor)`` pairs into a transformers model, by ``state_dict()`` name.

Checkpoint names are accepted too where transformers 5 keeps a different in-memory layout
(MoE experts fused as ``...experts.gate_up_proj`` [E, 2I, H] and ``...experts.down_proj``;
Mixtral's ``block_sparse_moe`` renamed ``mlp``), while checkpoints, HF exports and vLLM use
per-expert names such as ``...experts.{e}.gate_proj.weight``. The model's own checkpoint
conversions (transformers' ``conversion_mapping``: renamings, then expert merges and
concatenations) tell which slice of which tensor such a name is copied into.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

import torch


class WeightUpdateError(ValueError):
    """A pushed weight does not fit the rollout model (unknown name or wrong shape)."""


class Targets(dict):
    """Name → tensor to copy into, with the model's checkpoint conversions."""

    conversions: tuple[list, list] = ([], [])


def named_targets(model: torch.nn.Module) -> Targets:
    """Every name a weight can arrive under, mapped to the tensor to copy into.

    ``remove_duplicate=False`` keeps aliases: with tied embeddings both
    ``model.embed_tokens.weight`` and ``lm_head.weight`` resolve to the one shared parameter,
    so either name (or both) may be pushed.
    """
    targets = Targets(model.named_parameters(remove_duplicate=False))
    targets.conversions = _conversions(model)
    # Persistent buffers are part of a checkpoint too (non-persistent ones, e.g. rotary
    # inv_freq, are derived from the config and never sent).
    state_names = set(model.state_dict(keep_vars=True))
    for name, buffer in model.named_buffers(remove_duplicate=False):
        if name in state_names:
            targets[name] = buffer
    return targets


def _conversions(model: torch.nn.Module) -> tuple[list, list]:
    """transformers' checkpoint → model conversions for ``model``: (renamings, converters)."""
    from transformers.conversion_mapping import extract_weight_conversions_for_model
    from transformers.core_model_loading import WeightConverter, WeightRenaming

    transforms = extract_weight_conversions_for_model(model) or []
    return (
        [t for t in transforms if isinstance(t, WeightRenaming)],
        [t for t in transforms if isinstance(t, WeightConverter)],
    )


_EXPERT_INDEX = re.compile(r"\.experts\.(\d+)\.")


def _checkpoint_slice(targets: dict[str, torch.Tensor], name: str) -> torch.Tensor | None:
    """The view of a model tensor that checkpoint name ``name`` loads into, if any: renamed,
    then, for an expert merged into a fused tensor, its row (and its part of a concatenation,
    such as gate or up)."""
    from transformers.core_model_loading import Concatenate, MergeModulelist

    renamings, converters = getattr(targets, "conversions", ([], []))
    for renaming in renamings:
        name, _ = renaming.rename_source_key(name)
    if name in targets:
        return targets[name]
    match = _EXPERT_INDEX.search(name)
    expert = int(match.group(1)) if match else None
    for converter in converters:
        key, pattern = converter.rename_source_key(name)
        if pattern is None:
            continue
        ops = converter.operations
        fused = targets.get(key)
        if fused is None or expert is None or not isinstance(ops[0], MergeModulelist):
            return None
        if expert >= fused.shape[0]:
            return None
        view = fused[expert]
        for op in ops[1:]:
            if not isinstance(op, Concatenate):
                return None
            parts = len(converter.source_patterns)
            view = view.chunk(parts, dim=op.dim - 1)[converter.source_patterns.index(pattern)]
        return view
    return None


def copy_named_tensors(
    targets: dict[str, torch.Tensor], named_tensors: Iterable[tuple[str, torch.Tensor]]
) -> int:
    """Copy each tensor into ``targets[name]`` (casting dtype/device); returns the count."""
    count = 0
    with torch.no_grad():
        for name, tensor in named_tensors:
            target = targets.get(name)
            if target is None:
                target = _checkpoint_slice(targets, name)
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
