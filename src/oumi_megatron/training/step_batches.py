"""The micro-batches one data-parallel rank trains on in one GRPO step.

Sequences are prompt + completion token ids; only completion tokens are targets. Packing on:
first-fit-decreasing bins under a token budget, balanced across DP ranks (`data.packing`).
Packing off: the rank's contiguous slice of the global batch, `micro_batch_size` rows each.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from oumi_megatron.data.packing import (
    MicroBatch,
    pack_bin,
    pad_batch,
    plan_microbatches,
    round_up,
)


@dataclass(frozen=True)
class StepSequences:
    """Sequences of one step (a DP rank's share, or the whole step), token-aligned extras per
    sequence."""

    input_ids: list[torch.Tensor]  # prompt + completion
    loss_masks: list[torch.Tensor]  # 1 on completion tokens
    aux: dict[str, list[torch.Tensor | float]]  # e.g. advantages (scalar), rollout_logprobs
    sequence_ids: list[int] | None = None  # index of each sequence in the step, when known
    rewards: list[float] | None = None  # each sequence's reward, when known

    @classmethod
    def from_rollouts(
        cls,
        prompts,
        completions,
        rollout_logprobs,
        advantages,
        trained=None,
        sequence_ids=None,
        rewards=None,
    ) -> StepSequences:
        """``trained[k]`` False: sequence k is in the batch, its loss mask all zero."""
        input_ids, masks, rollout_lp = [], [], []
        trained = [True] * len(prompts) if trained is None else trained
        for prompt, completion, logprobs, kept in zip(
            prompts, completions, rollout_logprobs, trained, strict=True
        ):
            p, c = len(prompt), len(completion)
            input_ids.append(torch.tensor(list(prompt) + list(completion), dtype=torch.long))
            masks.append(torch.cat([torch.zeros(p), torch.full((c,), float(kept))]))
            rollout_lp.append(
                torch.cat([torch.zeros(p), torch.as_tensor(logprobs, dtype=torch.float32)])
            )
        aux = {"rollout_logprobs": rollout_lp, "advantages": [float(a) for a in advantages]}
        return cls(input_ids, masks, aux, sequence_ids, rewards)

    def with_aux(self, name: str, values: list[torch.Tensor | float]) -> StepSequences:
        return dataclasses.replace(self, aux={**self.aux, name: values})

    def __len__(self) -> int:
        return len(self.input_ids)

    def subset(self, start: int, stop: int) -> StepSequences:
        """Sequences [start, stop) with their extras (a mini-batch of the step)."""
        aux = {k: v[start:stop] for k, v in self.aux.items()}
        ids, rewards = self.sequence_ids, self.rewards
        return StepSequences(
            self.input_ids[start:stop],
            self.loss_masks[start:stop],
            aux,
            None if ids is None else ids[start:stop],
            None if rewards is None else rewards[start:stop],
        )


@dataclass(frozen=True)
class BatchingSettings:
    micro_batch_size: int
    dp_size: int
    dp_rank: int
    packing: bool
    token_budget: int | None = None
    microbatch_multiple: int = 1  # the interleaved pipeline schedule wants a multiple of PP
    pad_token_id: int = 0
    # The interleaved (VPP) schedule, and expert parallelism over the all-gather token
    # dispatcher, need one tensor shape for every micro-batch.
    fixed_shape: bool = False
    # Row length of fixed-shape padded micro-batches, agreed over data-parallel ranks
    # (None: the longest of these sequences).
    pad_length: int | None = None
    # Context parallelism: every sequence (packed slot or padded row) is padded to a multiple
    # of 2 × cp_size, to be cut into 2·CP chunks (`data.context_parallel`).
    cp_size: int = 1
    # Sequence parallelism: each CP rank's tokens of a micro-batch are split over this many TP
    # ranks (`ParallelLayout.sp_size`), so the row (packed: the whole bin) is padded to a
    # multiple of cp_size × sp_size.
    sp_size: int = 1


def rank_microbatch_indices(num_sequences: int, lengths: list[int], s: BatchingSettings):
    """Sequence indices of each micro-batch of rank `s.dp_rank` (same count on every rank)."""
    if s.packing:
        budget = s.token_budget or max(lengths) * s.micro_batch_size
        plan = plan_microbatches(
            lengths,
            budget,
            s.dp_size,
            pad_sequences_to_multiple=2 * s.cp_size if s.cp_size > 1 else 1,
            microbatch_multiple=s.microbatch_multiple,
        )
        return plan.for_rank(s.dp_rank), plan
    per_rank = num_sequences // s.dp_size
    start = s.dp_rank * per_rank
    mine = list(range(start, start + per_rank))
    return [mine[i : i + s.micro_batch_size] for i in range(0, per_rank, s.micro_batch_size)], None


def build_microbatches(seqs: StepSequences, s: BatchingSettings) -> tuple[list[MicroBatch], object]:
    """This DP rank's micro-batches of the whole step's `seqs` (see `rank_microbatch_indices`)."""
    lengths = [len(x) for x in seqs.input_ids]
    groups, plan = rank_microbatch_indices(len(seqs), lengths, s)
    return build_batches(seqs, groups, s), plan


def build_batches(
    seqs: StepSequences, groups: list[list[int]], s: BatchingSettings
) -> list[MicroBatch]:
    """One packed (or padded) micro-batch per group of sequence indices (``[]``: empty)."""
    lengths = [len(x) for x in seqs.input_ids]
    build = pack_bin if s.packing else pad_batch
    chunks = 2 * s.cp_size if s.cp_size > 1 else 1
    # Every micro-batch a multiple of this (CP's chunks, each CP rank's tokens over SP) ...
    pad = math.lcm(chunks, s.cp_size * s.sp_size)
    if s.fixed_shape:  # ... or all of one length: the largest any batch can have, rounded up
        longest = s.pad_length or max(lengths)
        fixed = (s.token_budget or longest * s.micro_batch_size) if s.packing else longest
        pad = round_up(fixed, pad)
    extra = {"pad_sequences_to_multiple": chunks} if s.packing else {}
    return [
        build(
            indices,
            seqs.input_ids,
            seqs.loss_masks,
            seqs.aux,
            pad_to_multiple=pad,
            pad_token_id=s.pad_token_id,
            **extra,
        )  # fmt: skip
        for indices in groups
    ]
