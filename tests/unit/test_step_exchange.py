"""route_sequences on one rank: the record encoding is exact, order is training order, and a
missing or duplicated sequence fails the step (the multi-rank routing is tested under
torchrun in tests/integration/test_rollout_replicas.py)."""

from __future__ import annotations

import pytest
import torch

from oumi_megatron.step.exchange import ExchangeError, route_sequences
from oumi_megatron.step.rollout import RolloutBatch
from oumi_megatron.step.topology import RolloutTopology
from oumi_megatron.training.step_batches import StepSequences

TOPOLOGY = RolloutTopology(1, (0,), (0,), num_prompts=2, num_generations=2, global_batch_size=4)


def _batch(order: list[int]) -> tuple[RolloutBatch, list[float]]:
    batch = RolloutBatch()
    for s in order:
        batch.sequence_ids.append(s)
        batch.prompt_ids.append([7, 8 + s // 2])
        batch.completion_ids.append([100 + s] * (s + 1))
        batch.rollout_logprobs.append([-0.123456789 * (k + 1) for k in range(s + 1)])
    return batch, [0.5 - 0.3 * s for s in order]


def test_sequences_arrive_exactly_in_training_order():
    batch, advantages = _batch([2, 3, 0, 1])  # a replica may hold them in any order
    sequences, stats = route_sequences(TOPOLOGY, 0, batch, advantages)
    expected_batch, expected_adv = _batch([0, 1, 2, 3])
    expected = StepSequences.from_rollouts(expected_batch.prompt_ids,
                                           expected_batch.completion_ids,
                                           expected_batch.rollout_logprobs, expected_adv)  # fmt: skip
    for got, want in zip(sequences.input_ids, expected.input_ids, strict=True):
        assert torch.equal(got, want)
    for got, want in zip(sequences.aux["rollout_logprobs"], expected.aux["rollout_logprobs"],
                         strict=True):  # fmt: skip
        assert torch.equal(got, want), "float32 log-probs survive the float64 record exactly"
    assert sequences.aux["advantages"] == pytest.approx(expected.aux["advantages"], abs=0)
    assert (stats.sequences_received, stats.sequences_trained) == (4, 4)
    # 6 header values + prompt (2) + completion and log-probs (2 x (s + 1)) per sequence.
    assert stats.bytes_received == 8 * sum(6 + 2 + 2 * (s + 1) for s in range(4))
    assert stats.bytes_sent_off_node == 0
    assert all(bool(m[2:].all()) for m in sequences.loss_masks)


def test_untrained_sequences_arrive_with_an_empty_loss_mask():
    """Overlong filtering: a completion left out of the loss still arrives (it counts in the
    sequence normaliser), with no loss token."""
    batch, advantages = _batch([0, 1, 2, 3])
    trained = [True, False, True, False]
    sequences, _ = route_sequences(TOPOLOGY, 0, batch, advantages, trained)
    assert [int(m.sum()) for m in sequences.loss_masks] == [1, 0, 3, 0]
    assert len(sequences) == 4


def test_missing_or_duplicated_sequences_fail_the_step():
    batch, advantages = _batch([0, 1, 2])
    with pytest.raises(
        ExchangeError, match=r"received 3 sequences but trains on 4 \(missing \[3\]"
    ):
        route_sequences(TOPOLOGY, 0, batch, advantages)
    batch, advantages = _batch([0, 1, 2, 2])
    with pytest.raises(ExchangeError, match="sequence 2 received twice"):
        route_sequences(TOPOLOGY, 0, batch, advantages)
