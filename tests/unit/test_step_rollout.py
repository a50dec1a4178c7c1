"""generate_share: per-prompt seeds, global sequence ids, malformed engine output emptied and
counted (a sample) or refused (the batch)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from oumi_megatron.rollout.base import RolloutEngine, RolloutSample, SamplingParams
from oumi_megatron.step.rollout import MALFORMED, generate_share, prompt_seeds
from oumi_megatron.stops import FailurePolicyStop


@dataclass(frozen=True)
class Prompt:
    sample_id: str
    prompt_ids: tuple[int, ...]
    prompt_text: str = "p"
    columns: tuple = ()


class Tokenizer:
    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


class SeedEchoEngine:
    """Completion = [seed % 1000, sample index]; optionally broken."""

    def __init__(self, broken: str | None = None):
        self.broken, self.calls = broken, []

    submit = RolloutEngine.submit  # generates now, returns the samples' getter

    def generate(self, prompt_token_ids, params, prompt_seeds=None):
        self.calls.append(list(prompt_seeds))
        out = []
        for i, ids in enumerate(prompt_token_ids):
            for j in range(params.n):
                logprobs = (
                    BROKEN.get(self.broken, [-1.0, -2.0]) if (i, j) == (1, 0) else [-1.0, -2.0]
                )
                out.append(RolloutSample(i, list(ids), [prompt_seeds[i] % 1000, j], logprobs,
                                         "stop", j))  # fmt: skip
        return out[:-1] if self.broken == "missing" else out


# One sample's log-probs (prompt 1, generation 0), by kind of damage.
BROKEN = {"logprobs": [-1.0], "nan": [-1.0, float("nan")], "positive": [0.5, -1.0],
          "inf": [float("-inf"), -1.0]}  # fmt: skip
PROMPTS = [Prompt(f"s{i}", (i + 3,)) for i in range(6)]
PARAMS = SamplingParams(n=2, max_new_tokens=4, seed=7)


def test_share_uses_the_seed_of_each_prompt_in_the_step():
    engine = SeedEchoEngine()
    batch = generate_share(engine, Tokenizer(), PROMPTS, [2, 3], PARAMS, step=5)
    seeds = prompt_seeds(7, 5, [2, 3])
    assert engine.calls == [seeds]
    assert batch.sequence_ids == [4, 5, 6, 7]
    assert batch.completion_ids[0][0] == seeds[0] % 1000
    assert batch.sample_ids == ["s2/g0", "s2/g1", "s3/g0", "s3/g1"]
    assert prompt_seeds(7, 6, [2]) != prompt_seeds(7, 5, [2]), "new noise every step"


def test_an_empty_share_calls_no_engine():
    engine = SeedEchoEngine()
    assert len(generate_share(engine, Tokenizer(), PROMPTS, [], PARAMS, step=0)) == 0
    assert engine.calls == []


def test_a_batch_without_the_steps_groups_stops_the_run():
    with pytest.raises(FailurePolicyStop, match="returned 3 samples for 2 prompts x n=2"):
        generate_share(SeedEchoEngine("missing"), Tokenizer(), PROMPTS, [0, 1], PARAMS, step=0)


@pytest.mark.parametrize(("broken", "message"), [("logprobs", "1 log-probs for 2 tokens"),
                                                 ("nan", "log-prob nan"), ("inf", "log-prob -inf"),
                                                 ("positive", "log-prob 0.5")])  # fmt: skip
def test_a_malformed_sample_is_emptied_and_counted(broken, message, caplog):
    from oumi_megatron.step.metrics import reduce_tally, rollout_tally
    from oumi_megatron.step.reward import ScoredBatch
    from oumi_megatron.step.reward_guard import EMPTY_FRAC, MALFORMED_FRAC

    batch = generate_share(SeedEchoEngine(broken), Tokenizer(), PROMPTS, [0, 1], PARAMS, step=0)
    assert [len(c) for c in batch.completion_ids] == [2, 2, 0, 2]  # prompt 1's first sample
    assert batch.rollout_logprobs[2] == [] and batch.completions_text[2] == ""
    assert batch.finish_reasons == ["stop", "stop", MALFORMED, "stop"]
    assert message in caplog.text and "sample 0 of prompt 1 is malformed" in caplog.text
    scored = ScoredBatch(rewards=[0.0] * 4, advantages=[0.0] * 4)
    metrics = reduce_tally(rollout_tally(batch, scored, [], "none"), num_generations=2)
    assert (metrics[MALFORMED_FRAC], metrics[EMPTY_FRAC]) == (0.25, 0.0)
