"""How a model's layers are split over pipeline stages, with Megatron-Core's rules.

Megatron gives every stage the same number of layers unless told otherwise. When the layer
count does not divide (Llama-3.1-405B: 126 layers over 16 stages), it offers two uneven
splits (``TransformerConfig``): explicit first/last stage sizes
(``num_layers_in_first_pipeline_stage`` / ``num_layers_in_last_pipeline_stage``), or counting
the embedding and the loss as one layer each (``account_for_embedding_in_pipeline_split`` /
``account_for_loss_in_pipeline_split``), which also balances the last stage's large output
layer. These functions compute the layers per stage exactly as
``megatron.core.transformer.transformer_block.get_num_layers_to_build`` does (a unit test
compares them), so a layout can be checked and planned before any process starts.
"""

from __future__ import annotations

from dataclasses import dataclass


class PipelineSplitError(ValueError):
    """The layers cannot be split over the stages as asked."""


@dataclass(frozen=True)
class PipelineSplit:
    """Megatron's uneven-pipeline settings (all unset: every stage gets the same layers)."""

    first_stage_layers: int | None = None
    last_stage_layers: int | None = None
    embedding_in_split: bool = False
    loss_in_split: bool = False

    @property
    def is_even(self) -> bool:
        return self == PipelineSplit()

    def megatron_fields(self) -> dict[str, int | bool | None]:
        """The ``TransformerConfig`` fields, by Megatron's names."""
        return {
            "num_layers_in_first_pipeline_stage": self.first_stage_layers,
            "num_layers_in_last_pipeline_stage": self.last_stage_layers,
            "account_for_embedding_in_pipeline_split": self.embedding_in_split,
            "account_for_loss_in_pipeline_split": self.loss_in_split,
        }

    def set_fields(self) -> dict[str, int | bool]:
        """``megatron_fields`` that are set (what a recipe has to write)."""
        return {k: v for k, v in self.megatron_fields().items() if v}

    def describe(self) -> str:
        if self.is_even:
            return "even"
        parts = []
        if self.first_stage_layers is not None:
            parts.append(f"first stage {self.first_stage_layers} layers")
        if self.last_stage_layers is not None:
            parts.append(f"last stage {self.last_stage_layers} layers")
        if self.embedding_in_split:
            parts.append("embedding counted as a layer")
        if self.loss_in_split:
            parts.append("loss counted as a layer")
        return ", ".join(parts)


def stage_layers(
    num_layers: int, pp: int, vpp: int | None = None, split: PipelineSplit = PipelineSplit()
) -> list[int]:
    """Transformer layers on each pipeline rank (all its virtual stages together).

    Raises:
        PipelineSplitError: the split breaks one of Megatron's rules (message says which).
    """
    chunks = vpp if vpp is not None and pp > 1 else 1
    explicit = split.first_stage_layers is not None or split.last_stage_layers is not None
    if explicit and (split.embedding_in_split or split.loss_in_split):
        raise PipelineSplitError(
            "explicit first/last stage sizes cannot be combined with counting the embedding or "
            "the loss as a layer (Megatron allows one of the two)"
        )
    if explicit:
        per_rank = _explicit_stage_layers(num_layers, pp, split)
    else:
        per_rank = _counted_stage_layers(num_layers, pp, split)
    for rank, layers in enumerate(per_rank):
        slots = layers + _extra_slots(rank, pp, split)
        if slots % chunks:
            raise PipelineSplitError(
                f"pipeline stage {rank} holds {slots} layer(s), not divisible by "
                f"virtual_pipeline_model_parallel_size ({chunks})"
            )
        if layers < 0 or (layers == 0 and not _extra_slots(rank, pp, split)):
            raise PipelineSplitError(f"pipeline stage {rank} would hold {layers} layers")
    return per_rank


def _extra_slots(rank: int, pp: int, split: PipelineSplit) -> int:
    """The embedding/loss "layers" a rank counts when they take part in the split."""
    return int(split.embedding_in_split and rank == 0) + int(split.loss_in_split and rank == pp - 1)


def _explicit_stage_layers(num_layers: int, pp: int, split: PipelineSplit) -> list[int]:
    first, last = split.first_stage_layers, split.last_stage_layers
    if pp == 1:
        raise PipelineSplitError("first/last stage sizes need pipeline_model_parallel_size > 1")
    for name, value in (("first", first), ("last", last)):
        if value is not None and value <= 0:
            raise PipelineSplitError(f"the {name} stage must hold at least one layer")
    middle_layers = num_layers - (first or 0) - (last or 0)
    middle_stages = pp - (first is not None) - (last is not None)
    if middle_stages == 0 and middle_layers != 0:
        raise PipelineSplitError(
            f"first + last stage layers ({(first or 0) + (last or 0)}) must equal the model's "
            f"{num_layers} layers with 2 pipeline stages"
        )
    if middle_stages and (middle_layers <= 0 or middle_layers % middle_stages):
        raise PipelineSplitError(
            f"the {middle_layers} layer(s) left for the {middle_stages} middle stage(s) must "
            f"divide evenly (and be at least one per stage)"
        )
    middle = middle_layers // middle_stages if middle_stages else 0
    per_rank = [middle] * pp
    if first is not None:
        per_rank[0] = first
    if last is not None:
        per_rank[-1] = last
    return per_rank


def _counted_stage_layers(num_layers: int, pp: int, split: PipelineSplit) -> list[int]:
    slots = num_layers + int(split.embedding_in_split) + int(split.loss_in_split)
    if slots % pp:
        what = "layers" if split.is_even else "layers plus the embedding/loss counted as layers"
        raise PipelineSplitError(
            f"the model's {what} ({slots}) must be divisible by pipeline_model_parallel_size ({pp})"
        )
    return [slots // pp - _extra_slots(rank, pp, split) for rank in range(pp)]


def propose_split(num_layers: int, pp: int, vpp: int | None = None) -> PipelineSplit | None:
    """An uneven split that Megatron accepts, or None if none works.

    Counting the embedding and the loss as layers comes first (it also balances the first and
    last stages' extra work, as Megatron-Bridge's Llama-3.1-405B recipe does); then explicit
    first/last stage sizes with the smallest largest stage (the pipeline runs at the pace of
    its slowest stage), lighter first/last stages preferred (they also hold the embedding and
    the output layer).
    """
    for split in (
        PipelineSplit(embedding_in_split=True, loss_in_split=True),
        PipelineSplit(loss_in_split=True),
        PipelineSplit(embedding_in_split=True),
    ):
        if _valid(num_layers, pp, vpp, split):
            return split
    explicit = [
        PipelineSplit(first_stage_layers=first, last_stage_layers=last)
        for first in range(1, num_layers)
        for last in range(1, num_layers - first + 1)
    ]
    ranked = [
        (max(layers), split.first_stage_layers + split.last_stage_layers, split)
        for split in explicit
        if (layers := _valid(num_layers, pp, vpp, split))
    ]
    return min(ranked, key=lambda item: item[:2])[2] if ranked else None


def _valid(num_layers: int, pp: int, vpp: int | None, split: PipelineSplit) -> list[int] | None:
    try:
        return stage_layers(num_layers, pp, vpp, split)
    except PipelineSplitError:
        return None
