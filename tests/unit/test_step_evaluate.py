"""Evaluation on held-out prompts (`step/evaluate.py`): one greedy completion per prompt, each
replica its contiguous share, and the metrics by hand (weighted reward, per-function means,
accuracy by grpo.accuracy_reward's full marks, lengths, truncation)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from oumi_megatron.data.prompts import PromptExample
from oumi_megatron.rewards.registry import resolve_reward_function
from oumi_megatron.rollout.base import RolloutEngine, RolloutSample
from oumi_megatron.step.evaluate import Evaluator, replica_share

# Completions per prompt index: tokens (one character each when decoded) and finish reason.
ANSWERS = {0: ("abcd", "stop"), 1: ("ab", "stop"), 2: ("abcdef", "length"), 3: ("", "stop")}


class Tokenizer:
    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(ord("a") + i) for i in ids)


class Engine(RolloutEngine):
    """Answers each prompt with ANSWERS[its first token]; records the sampling settings."""

    def __init__(self):
        self.seen = []

    def generate(self, prompt_token_ids, params, prompt_seeds=None):
        self.seen.append((params, [ids[0] for ids in prompt_token_ids]))
        samples = []
        for i, ids in enumerate(prompt_token_ids):
            text, finish = ANSWERS[ids[0]]
            tokens = [ord(c) - ord("a") for c in text]
            samples.append(RolloutSample(i, list(ids), tokens, [0.0] * len(tokens), finish))
        return samples

    def update_weights(self, named_tensors):
        raise NotImplementedError


def _evaluator():
    length = resolve_reward_function("_reward_helpers:length_reward")
    exact = resolve_reward_function("_reward_helpers:answer_only")
    prompts = [PromptExample(f"v{i}", (i, 9), f"p{i}", None, {"answer": ANSWERS[i][0]})
               for i in range(4)]  # fmt: skip
    prompts[1].columns["answer"] = "zz"  # prompt 1's answer is wrong
    return Evaluator(prompts, Tokenizer(), [length, exact], [0.5, 2.0], exact.name, 8, every=2)


@pytest.mark.parametrize(("replicas", "replica"), [(1, 0), (2, 1)])
def test_greedy_share_and_metrics_by_hand(replicas, replica):
    evaluator, engine = _evaluator(), Engine()
    topology = SimpleNamespace(num_replicas=replicas, replica_of=lambda rank: replica)
    metrics = evaluator.run(engine, topology, rank=0, generates=True, is_leader=True)
    ((params, firsts),) = engine.seen
    assert params.temperature == 0.0 and params.n == 1 and params.max_new_tokens == 8
    share = replica_share(4, replicas, replica)
    assert firsts == share
    lengths = [len(ANSWERS[i][0]) for i in share]
    correct = [float(i != 1) for i in share]  # prompt 1's column does not match its answer
    n = len(share)
    assert metrics["eval/prompts"] == n
    assert metrics["eval/reward/mean"] == pytest.approx(
        sum(0.5 * le + 2.0 * c for le, c in zip(lengths, correct, strict=True)) / n
    )
    assert metrics["eval/reward/_reward_helpers:length_reward/mean"] == pytest.approx(
        sum(lengths) / n
    )
    assert metrics["eval/accuracy"] == pytest.approx(sum(correct) / n)
    assert metrics["eval/response_length/mean"] == pytest.approx(sum(lengths) / n)
    assert metrics["eval/response_length/truncated_frac"] == pytest.approx(
        sum(ANSWERS[i][1] == "length" for i in share) / n
    )


def test_due_every_n_steps_and_at_the_end():
    evaluator = _evaluator()
    assert [s for s in range(1, 8) if evaluator.is_due(s, max_steps=7)] == [2, 4, 6, 7]
