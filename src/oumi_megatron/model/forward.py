"""Forward-only passes through Megatron's pipeline schedule (any TP/PP/VPP layout)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from megatron.core import parallel_state
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region


def microbatches(input_ids: torch.Tensor, micro_batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Split [B, S] token ids into micro-batches with positions 0..S-1."""
    positions = torch.arange(input_ids.shape[1]).unsqueeze(0).expand_as(input_ids)
    return [
        {"input_ids": ids, "position_ids": pos}
        for ids, pos in zip(
            input_ids.split(micro_batch_size), positions.split(micro_batch_size), strict=True
        )
    ]


def run_forward_only(
    model: list[torch.nn.Module],
    batches: list[dict[str, torch.Tensor]],
    on_output: Callable[[torch.Tensor, dict[str, torch.Tensor]], object],
) -> list[object]:
    """Run every micro-batch through the pipeline; `on_output(logits_shard, batch)` runs on the
    last stage for each micro-batch and its results are returned there (empty list elsewhere)."""
    seq_length = batches[0]["input_ids"].shape[1]
    device = next(model[0].parameters()).device

    def forward_step(data_iterator, chunk):
        batch = {k: v.to(device) for k, v in next(data_iterator).items()}
        output = chunk(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=None
        )

        def collect(output_tensor, non_loss_data=True):
            return on_output(output_tensor, batch)

        return output, collect

    for chunk in model:
        chunk.eval()
    with torch.no_grad():
        return get_forward_backward_func()(
            forward_step_func=forward_step,
            data_iterator=[iter(batches) for _ in model] if len(model) > 1 else iter(batches),
            model=model if len(model) > 1 else model[0],
            num_microbatches=len(batches),
            seq_length=seq_length,
            micro_batch_size=batches[0]["input_ids"].shape[0],
            forward_only=True,
            collect_non_loss_data=True,
        )


def forward_logits(
    model: list[torch.nn.Module], input_ids: torch.Tensor, micro_batch_size: int = 1
) -> torch.Tensor | None:
    """Full-vocabulary logits [B, S, V_padded] on the last pipeline stage, None on other stages.

    Gathers the vocab-parallel shards, so it is for checks and small models; training computes
    log-probs shard-wise instead.
    """
    outputs = run_forward_only(
        model,
        microbatches(input_ids, micro_batch_size),
        lambda logits, batch: gather_from_tensor_model_parallel_region(logits).float().cpu(),
    )
    if not parallel_state.is_pipeline_last_stage(ignore_virtual=True):
        return None
    return torch.cat(outputs, dim=0)
