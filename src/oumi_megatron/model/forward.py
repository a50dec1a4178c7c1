"""Forward-only passes through Megatron's pipeline schedule (any TP/PP/VPP layout)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from megatron.core import parallel_state
from megatron.core.packed_seq_params import PackedSeqParams
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
    last stage for each micro-batch and its results are returned there (empty list elsewhere).
    A batch's optional ``packed_seq_params`` (the keyword arguments of Megatron's
    ``PackedSeqParams``) makes its row a packed one (THD)."""
    # The whole sequence length: the schedule divides it by the context-parallel size.
    seq_length = batches[0]["input_ids"].shape[1] * parallel_state.get_context_parallel_world_size()
    device = next(model[0].parameters()).device

    def forward_step(data_iterator, chunk):
        batch = next(data_iterator)
        packed = batch.get("packed_seq_params")
        if packed is not None:
            packed = PackedSeqParams(**{k: _to(v, device) for k, v in packed.items()})
        batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        output = chunk(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=None,
            packed_seq_params=packed,
        )  # fmt: skip

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

    Gathers the vocab-parallel shards (and, under context parallelism, every CP rank's chunks
    of the sequence), so it is for checks and small models; training computes log-probs
    shard-wise instead.
    """
    cp_size = parallel_state.get_context_parallel_world_size()
    seq = input_ids.shape[1]
    batches = microbatches(_pad_for_cp(input_ids, cp_size), micro_batch_size)
    if cp_size > 1:
        batches = [_cp_share(b, cp_size) for b in batches]
    outputs = run_forward_only(
        model,
        batches,
        lambda logits, batch: gather_from_tensor_model_parallel_region(logits).float().cpu(),
    )
    if not parallel_state.is_pipeline_last_stage(ignore_virtual=True):
        return None
    logits = torch.cat(outputs, dim=0)
    if cp_size > 1:
        logits = _gather_cp(logits, cp_size)
    return logits[:, :seq]


def packed_logits(
    model: list[torch.nn.Module], sequences: list[torch.Tensor], rows: int = 1
) -> list | None:
    """Each sequence's full-vocabulary logits ``[n_i, V_padded]`` from ``rows`` packed rows
    (THD; one micro-batch each, equal lengths as the pipeline needs), packed as training packs
    them (``data.packing.pack_bin``); None off the last pipeline stage. For checks and small
    models, without context parallelism."""
    from oumi_megatron.data.packing import pack_bin

    bins = [list(range(len(sequences)))[r::rows] for r in range(rows)]
    width = max(sum(len(sequences[i]) for i in indices) for indices in bins)
    batches = [pack_bin(indices, sequences, pad_to_multiple=width) for indices in bins]
    inputs = [
        {"input_ids": b.input_ids, "position_ids": b.position_ids,
         "packed_seq_params": b.packed_seq_kwargs()}
        for b in batches
    ]  # fmt: skip
    outputs = run_forward_only(
        model, inputs, lambda logits, _: gather_from_tensor_model_parallel_region(logits).float()
    )
    if not parallel_state.is_pipeline_last_stage(ignore_virtual=True):
        return None
    found: dict[int, torch.Tensor] = {}
    for batch, logits in zip(batches, outputs, strict=True):
        flat = logits.reshape(-1, logits.shape[-1]).cpu()
        for i, start, n in zip(
            batch.sequence_indices, batch.seq_starts, batch.seq_lengths, strict=True
        ):
            found[i] = flat[start : start + n]
    return [found[i] for i in range(len(sequences))]


def _to(value, device):
    return value.to(device) if isinstance(value, torch.Tensor) else value


def _pad_for_cp(input_ids: torch.Tensor, cp_size: int) -> torch.Tensor:
    multiple = 2 * cp_size if cp_size > 1 else 1
    pad = -input_ids.shape[1] % multiple
    return torch.nn.functional.pad(input_ids, (0, pad)) if pad else input_ids


def _cp_share(batch: dict[str, torch.Tensor], cp_size: int) -> dict[str, torch.Tensor]:
    from oumi_megatron.data.context_parallel import local_positions

    rank = parallel_state.get_context_parallel_rank()
    index = local_positions([batch["input_ids"].shape[1]], rank, cp_size)
    return {k: v.index_select(1, index) for k, v in batch.items()}


def _gather_cp(local: torch.Tensor, cp_size: int) -> torch.Tensor:
    """[B, S/C, V] chunks of every CP rank -> [B, S, V] in sequence order."""
    from oumi_megatron.data.context_parallel import gather_order

    parts = [torch.empty_like(local) for _ in range(cp_size)]
    torch.distributed.all_gather(
        parts, local.contiguous(), group=parallel_state.get_context_parallel_group()
    )
    order = gather_order([local.shape[1] * cp_size], cp_size)
    return torch.cat(parts, dim=1).index_select(1, order)
