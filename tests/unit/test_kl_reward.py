"""KL in the reward: per-sequence KL sums from the micro-batches' log-probs, then the group
advantages of the penalised rewards (one process: the all-reduces are the identity)."""

import pytest
import torch

from oumi_megatron.config import GrpoParams
from oumi_megatron.step import kl_reward
from oumi_megatron.step.update import MiniBatch
from oumi_megatron.training.step_batches import BatchingSettings, StepSequences, build_batches


@pytest.fixture(autouse=True)
def _single_owner(monkeypatch):
    monkeypatch.setattr(kl_reward, "is_loss_owner", lambda: True)
    monkeypatch.setattr(kl_reward, "is_metric_owner", lambda: True)


def _minibatch(packing: bool, groups: list[list[int]]) -> tuple[MiniBatch, StepSequences]:
    # 4 sequences (prompt 2 tokens, completions 1..4 tokens), step ids 4..7 of an 8-sequence
    # step; rewards [1, 0, 0, 1]: groups (4, 5) and (6, 7) of G = 2.
    completions = [[5] * n for n in (1, 2, 3, 4)]
    seqs = StepSequences.from_rollouts([[1, 2]] * 4, completions, [[0.0] * n for n in (1, 2, 3, 4)],
                                       [0.0] * 4)  # fmt: skip
    seqs = StepSequences(
        seqs.input_ids, seqs.loss_masks, seqs.aux, [4, 5, 6, 7], [1.0, 0.0, 0.0, 1.0]
    )
    batching = BatchingSettings(micro_batch_size=2, dp_size=1, dp_rank=0, packing=packing)
    batches = build_batches(seqs, groups, batching)
    # Old log-probs 0, reference log-probs -0.5 on every position: k1 = 0.5 per token.
    batches = [b.with_aux("old_logprobs", torch.zeros(b.input_ids.shape))
                .with_aux("ref_logprobs", torch.full(b.input_ids.shape, -0.5))
               for b in batches]  # fmt: skip
    return MiniBatch(seqs, batches, None, groups), seqs


@pytest.mark.parametrize("packing", [False, True])
def test_kl_sums_per_sequence_and_penalised_advantages(packing: bool) -> None:
    mb, seqs = _minibatch(packing, [[0, 1], [2, 3]])
    sums = kl_reward.sequence_kl_sums([mb], 8, "k1")
    # k1 summed over each completion: 0.5 x length; other sequences of the step are zero.
    torch.testing.assert_close(
        sums, torch.tensor([0, 0, 0, 0, 0.5, 1.0, 1.5, 2.0], dtype=torch.float64)
    )
    grpo = GrpoParams(num_generations=2, kl_in_reward_coef=0.2, kl_estimator="k1",
                      scale_rewards="none")  # fmt: skip
    settings = kl_reward.KLRewardSettings(grpo, num_sequences=8)
    advantages, metrics = kl_reward.penalised_advantages([mb], seqs, settings)
    # Penalised rewards: 1 - 0.1, 0 - 0.2 | 0 - 0.3, 1 - 0.4 -> group means 0.35, 0.15.
    assert advantages == pytest.approx([0.55, -0.55, -0.45, 0.45], abs=1e-12)
    assert metrics["kl_in_reward/penalty_mean"] == pytest.approx(0.2 * 5.0 / 8)


def test_row_order_follows_each_micro_batch_group() -> None:
    mb, _ = _minibatch(False, [[3, 0], [1, 2]])
    sums = kl_reward.sequence_kl_sums([mb], 8, "k1")
    torch.testing.assert_close(sums[4:], torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=torch.float64))
