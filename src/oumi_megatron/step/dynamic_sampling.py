"""DAPO's dynamic sampling: drop prompt groups whose rewards all agree, refill from more prompts.

A group whose completions all got the same reward has zero advantage: it costs a full update
and teaches nothing. With ``grpo.dynamic_sampling`` a step generates in rounds: every round
takes the loader's next ``prompts_per_step`` prompts (seeds derived from the prompt's index in
the step, ``round x prompts_per_step + i``, so the samples do not depend on the replicas), each
replica scores its share, and one all-reduce of a flag per prompt tells every rank which groups
vary. Rounds stop once ``prompts_per_step`` groups vary, or after
``dynamic_sampling_max_rounds``; the first varying groups, in (round, prompt) order, make the
batch, renumbered to the step's positions (so `step.exchange` routes them as usual). When the
rounds run out, the earliest zero-variance groups fill the batch, which keeps its size; they
are counted in ``dynamic_sampling/filled_groups``. Surplus varying groups are discarded, as in
verl's DAPO recipe. Reward metrics cover every generated completion; the update sees the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from oumi_megatron.rewards.scoring import RewardResult
from oumi_megatron.step.reward import ScoredBatch
from oumi_megatron.step.rollout import RolloutBatch

_ROLLOUT_FIELDS = ("prompt_ids", "completion_ids", "rollout_logprobs", "finish_reasons",
                   "sample_ids", "prompts_text", "completions_text", "columns")  # fmt: skip


@dataclass
class Round:
    """One generation round of this rank (empty batches off the replica leaders)."""

    rollouts: RolloutBatch
    scored: ScoredBatch


def local_variation(rollouts: RolloutBatch, scored: ScoredBatch, num_prompts: int, group: int):
    """``[num_prompts]`` float64: 1 where this rank holds the prompt's group and its rewards
    differ, else 0 (sum it over the world: each group lives on one replica leader)."""
    flags = torch.zeros(num_prompts, dtype=torch.float64)
    for start in range(0, len(rollouts), group):
        rewards = scored.rewards[start : start + group]
        if max(rewards) != min(rewards):
            flags[rollouts.sequence_ids[start] // group] = 1.0
    return flags


def select_groups(rounds: list[list[bool]], needed: int) -> tuple[list[tuple[int, int]], int]:
    """The batch's groups as (round, prompt), varying ones first in generation order, then
    (when short) the earliest zero-variance ones; and how many of those filled it."""
    varying = [(r, p) for r, flags in enumerate(rounds) for p, v in enumerate(flags) if v]
    chosen = varying[:needed]
    filler = [(r, p) for r, flags in enumerate(rounds) for p, v in enumerate(flags) if not v]
    filled = filler[: needed - len(chosen)]
    return sorted(chosen + filled), len(filled)


def enough(rounds: list[list[bool]], needed: int) -> bool:
    return sum(sum(flags) for flags in rounds) >= needed


def assemble(rounds: list[Round], selection: list[tuple[int, int]], group: int):
    """This rank's share of the selected groups as one batch, sequence ids renumbered to the
    selected group's position ``j`` (``j x group + generation``)."""
    position = {key: j for j, key in enumerate(selection)}
    batch, scored = RolloutBatch(), ScoredBatch()
    for r, part in enumerate(rounds):
        for start in range(0, len(part.rollouts), group):
            key = (r, part.rollouts.sequence_ids[start] // group)
            if key not in position:
                continue
            span = range(start, start + group)
            for k in span:
                generation = part.rollouts.sequence_ids[k] % group
                batch.sequence_ids.append(position[key] * group + generation)
                for name in _ROLLOUT_FIELDS:
                    getattr(batch, name).append(getattr(part.rollouts, name)[k])
            scored.rewards += part.scored.rewards[start : start + group]
            scored.advantages += part.scored.advantages[start : start + group]
            if part.scored.overlong_penalties:
                scored.overlong_penalties += part.scored.overlong_penalties[start : start + group]
    return batch, scored


def merge(rounds: list[Round]) -> tuple[RolloutBatch, ScoredBatch]:
    """Every round's completions of this rank, for the step's reward and length metrics."""
    if len(rounds) == 1:
        return rounds[0].rollouts, rounds[0].scored
    batch, scored = RolloutBatch(), ScoredBatch()
    results = [part.scored.result for part in rounds if part.scored.result is not None]
    for part in rounds:
        batch.sequence_ids += part.rollouts.sequence_ids
        for name in _ROLLOUT_FIELDS:
            getattr(batch, name).extend(getattr(part.rollouts, name))
        scored.rewards += part.scored.rewards
        scored.advantages += part.scored.advantages
        scored.overlong_penalties += part.scored.overlong_penalties
        scored.num_zero_std_groups += part.scored.num_zero_std_groups
    scored.result = _merge_results(results) if results else None
    return batch, scored


def _merge_results(results: list[RewardResult]) -> RewardResult:
    names = list(results[0].per_function)
    return RewardResult(
        total=[v for r in results for v in r.total],
        per_function={n: [v for r in results for v in r.per_function[n]] for n in names},
        failures={n: sum(r.failures[n] for r in results) for n in names},
        nones={n: sum(r.nones[n] for r in results) for n in names},
        failed=[f for r in results for f in r.failed],
        seconds={n: sum(r.seconds.get(n, 0.0) for r in results) for n in names},
    )


def metrics(rounds: list[list[bool]], filled: int) -> dict[str, float]:
    """The same on every rank (the flags are global)."""
    generated = sum(len(flags) for flags in rounds)
    varying = sum(sum(flags) for flags in rounds)
    return {
        "dynamic_sampling/rounds": float(len(rounds)),
        "dynamic_sampling/varying_groups_frac": varying / max(generated, 1),
        "dynamic_sampling/filled_groups": float(filled),
    }
