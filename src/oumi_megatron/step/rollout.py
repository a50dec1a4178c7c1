"""Rollout: each replica generates `num_generations` completions for its own share of prompts.

The step's prompts are the same list on every rank (the loader is a pure function of seed and
position); a replica's leader generates the prompts its `RolloutTopology` assigns it. Every
prompt has its own seed, derived from (seed, step, prompt index in the step): the samples of a
step do not depend on how many replicas share it, and a resumed run samples exactly what an
uninterrupted one would.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from oumi_megatron.rollout.base import RolloutEngine, SamplingParams, derive_seed
from oumi_megatron.stops import FailurePolicyStop

logger = logging.getLogger(__name__)

#: finish_reason of a completion the engine returned malformed: emptied, so none of its tokens
#: trains (counted in response_length/malformed_frac and bounded like empty completions).
MALFORMED = "malformed"
# A sampled token's log-prob is <= 0; vLLM's bf16/fp32 rounding stays far below this.
_LOGPROB_SLACK = 1e-3


@dataclass
class RolloutBatch:
    """Completions of one replica, prompt-major: prompt i's generations are contiguous.

    ``sequence_ids`` are the global sequence indices of the step (``prompt * G + generation``).
    """

    sequence_ids: list[int] = field(default_factory=list)
    prompt_ids: list[list[int]] = field(default_factory=list)
    completion_ids: list[list[int]] = field(default_factory=list)
    rollout_logprobs: list[list[float]] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    sample_ids: list[str] = field(default_factory=list)
    prompts_text: list[str] = field(default_factory=list)
    completions_text: list[str] = field(default_factory=list)
    columns: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.completion_ids)

    def state_dict(self) -> dict:
        """JSON-safe (floats round-trip exactly through json)."""
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict) -> RolloutBatch:
        return cls(**state)

    @property
    def num_completion_tokens(self) -> int:
        return sum(len(c) for c in self.completion_ids)

    @property
    def num_tokens(self) -> int:
        return self.num_completion_tokens + sum(len(p) for p in self.prompt_ids)


def prompt_seeds(seed: int, step: int, prompt_indices: list[int]) -> list[int]:
    """One sampling seed per prompt of the step, by its index in the step (not in a share)."""
    return [derive_seed(seed, step, index) for index in prompt_indices]


def generate_share(*args, **kwargs) -> RolloutBatch:
    """:func:`submit_share`, waited for: this replica's batch of the step's prompts."""
    return submit_share(*args, **kwargs)()


def submit_share(
    engine: RolloutEngine,
    tokenizer,
    prompts: list,
    prompt_indices: list[int],
    params: SamplingParams,
    step: int,
    seed_offset: int = 0,
) -> Callable[[], RolloutBatch]:
    """Start the engine on this replica's prompts (``prompt_indices`` into the step's list);
    returns the function that waits for their batch (engines in other processes generate
    meanwhile). ``seed_offset``: added to the prompt's index for its seed (a later round of
    dynamic sampling: round x prompts per step)."""
    if not prompt_indices:
        return RolloutBatch
    seeds = prompt_seeds(params.seed or 0, step, [seed_offset + i for i in prompt_indices])
    mine = [prompts[i] for i in prompt_indices]
    wait = engine.submit(
        [list(p.prompt_ids) for p in mine], replace(params, seed=None), prompt_seeds=seeds
    )
    return lambda: _batch(wait(), mine, prompt_indices, params, tokenizer)


def _batch(samples, mine: list, prompt_indices: list[int], params, tokenizer) -> RolloutBatch:
    batch = RolloutBatch()
    samples = sorted(samples, key=lambda s: (s.prompt_index, s.sample_index))
    expected = len(mine) * params.n
    if len(samples) != expected or any(
        not 0 <= s.prompt_index < len(mine) or not 0 <= s.sample_index < params.n for s in samples
    ):  # the step's groups cannot be formed: nothing to train on
        raise FailurePolicyStop(
            f"the rollout engine returned {len(samples)} samples for {len(mine)} prompts x "
            f"n={params.n} (or indices out of range): malformed output. Fix: check the rollout "
            f"log (an engine or rollout process failing)."
        )
    for sample in samples:
        completion, logprobs = list(sample.completion_ids), list(sample.completion_logprobs)
        finish_reason, problem = sample.finish_reason, _malformed(completion, logprobs)
        if problem:
            logger.warning("rollout: sample %d of prompt %d is malformed (%s); it is emptied, "
                           "counted in response_length/malformed_frac and not trained on",
                           sample.sample_index, prompt_indices[sample.prompt_index], problem)  # fmt: skip
            completion, logprobs, finish_reason = [], [], MALFORMED
        prompt = mine[sample.prompt_index]
        global_prompt = prompt_indices[sample.prompt_index]
        batch.sequence_ids.append(global_prompt * params.n + sample.sample_index)
        batch.prompt_ids.append(list(sample.prompt_ids))
        batch.completion_ids.append(completion)
        batch.rollout_logprobs.append([float(x) for x in logprobs])
        batch.finish_reasons.append(finish_reason)
        batch.sample_ids.append(f"{prompt.sample_id}/g{sample.sample_index}")
        batch.prompts_text.append(prompt.prompt_text)
        batch.completions_text.append(tokenizer.decode(completion, skip_special_tokens=True))
        batch.columns.append(dict(prompt.columns))
    return batch


def _malformed(completion: list[int], logprobs: list[float]) -> str | None:
    """Why one sample's output cannot be trained on, or None: its log-probs must be one per
    token, finite and at most 0."""
    if len(logprobs) != len(completion):
        return f"{len(logprobs)} log-probs for {len(completion)} tokens"
    bad = next((x for x in logprobs if not math.isfinite(x) or x > _LOGPROB_SLACK), None)
    if bad is not None:
        return f"log-prob {bad} (not finite, or above 0)"
    return None
