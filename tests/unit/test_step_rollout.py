"""generate_share: per-prompt seeds, global sequence ids, malformed engine output refused."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from oumi_megatron.rollout.base import RolloutEngine, RolloutSample, SamplingParams
from oumi_megatron.step.rollout import generate_share, prompt_seeds


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
                logprobs = [-1.0, -2.0] if self.broken != "logprobs" else [-1.0]
                out.append(RolloutSample(i, list(ids), [prompt_seeds[i] % 1000, j], logprobs,
                                         "stop", j))  # fmt: skip
        return out[:-1] if self.broken == "missing" else out


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


@pytest.mark.parametrize(("broken", "message"), [("missing", "returned 3 samples for 2 prompts"),
                                                 ("logprobs", "1 log-probs for 2 completion")])  # fmt: skip
def test_malformed_engine_output_fails_the_step(broken, message):
    with pytest.raises(RuntimeError, match=message):
        generate_share(SeedEchoEngine(broken), Tokenizer(), PROMPTS, [0, 1], PARAMS, step=0)
