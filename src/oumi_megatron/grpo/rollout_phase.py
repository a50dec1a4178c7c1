"""Rollout: `num_generations` completions per prompt, generated on the engine's rank and shared.

The rollout engine lives on global rank 0 (colocated with the trainer there); every other rank
receives the finished batch. Sampling seeds derive from (seed, step), so a resumed run samples
exactly what an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.distributed as dist

from oumi_megatron.rollout.base import RolloutEngine, SamplingParams, derive_seed


@dataclass
class RolloutBatch:
    """Completions of one step, prompt-major: prompt i's generations are contiguous."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    rollout_logprobs: list[list[float]]
    finish_reasons: list[str]
    sample_ids: list[str]
    prompts_text: list[str]
    completions_text: list[str]
    columns: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.completion_ids)

    @property
    def num_completion_tokens(self) -> int:
        return sum(len(c) for c in self.completion_ids)

    @property
    def num_tokens(self) -> int:
        return self.num_completion_tokens + sum(len(p) for p in self.prompt_ids)


def generate_rollouts(engine: RolloutEngine, tokenizer, prompts, params: SamplingParams, step: int):
    """Run the engine on this step's prompts (engine rank only)."""
    step_params = SamplingParams(**{**vars(params), "seed": derive_seed(params.seed or 0, step)})
    samples = engine.generate([list(p.prompt_ids) for p in prompts], step_params)
    samples = sorted(samples, key=lambda s: (s.prompt_index, s.sample_index))
    batch = RolloutBatch([], [], [], [], [], [], [], [])
    for sample in samples:
        prompt = prompts[sample.prompt_index]
        batch.prompt_ids.append(list(sample.prompt_ids))
        batch.completion_ids.append(list(sample.completion_ids))
        batch.rollout_logprobs.append([float(x) for x in sample.completion_logprobs])
        batch.finish_reasons.append(sample.finish_reason)
        batch.sample_ids.append(f"{prompt.sample_id}/g{sample.sample_index}")
        batch.prompts_text.append(prompt.prompt_text)
        batch.completions_text.append(
            tokenizer.decode(sample.completion_ids, skip_special_tokens=True)
        )
        batch.columns.append(dict(prompt.columns))
    return batch


def share_from_rank0(obj):
    """Broadcast a picklable object from global rank 0 to every rank."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    holder = [obj if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
