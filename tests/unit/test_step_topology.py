"""RolloutTopology: replica shares, locality of prompts, destinations of sequences (pure)."""

from __future__ import annotations

import pytest

from oumi_megatron.step.topology import RolloutTopology


def topology(replica_size, dp_rank_of, node_of=None, prompts=8, generations=4, gbs=None):
    node_of = node_of or [0] * len(dp_rank_of)
    return RolloutTopology(replica_size, tuple(dp_rank_of), tuple(node_of), prompts, generations,
                           gbs or prompts * generations)  # fmt: skip


# Megatron's rank order is tp-cp-ep-dp-pp: TP fastest, PP slowest.
TP2_DP2 = [0, 0, 1, 1]
PP2_DP2 = [0, 1, 0, 1]  # ranks 0, 1 = stage 0 of DP 0, 1; ranks 2, 3 = stage 1
DP4 = [0, 1, 2, 3]


@pytest.mark.parametrize("dp_rank_of", [TP2_DP2, PP2_DP2, DP4])
@pytest.mark.parametrize("replica_size", [1, 2, 4])
def test_every_prompt_once_in_equal_contiguous_shares(dp_rank_of, replica_size):
    top = topology(replica_size, dp_rank_of)
    shares = [top.prompts_of_replica(j) for j in range(top.num_replicas)]
    assert sorted(p for share in shares for p in share) == list(range(8))
    assert {len(share) for share in shares} == {8 // top.num_replicas}
    for share in shares:
        assert share == list(range(share[0], share[0] + len(share))), "contiguous"


def test_one_replica_per_dp_group_keeps_data_in_the_group():
    # TP2 x DP2, replicas of 2 ranks = the TP groups: replica j serves DP rank j.
    top = topology(2, TP2_DP2)
    assert top.replica_of_prompt == (0, 0, 0, 0, 1, 1, 1, 1)
    # PP2 x DP2, one-rank replicas: DP 0's prompts go to its stage-0 and stage-1 ranks (0, 2).
    top = topology(1, PP2_DP2)
    assert top.replica_of_prompt == (0, 0, 2, 2, 1, 1, 3, 3)
    for prompt, replica in enumerate(top.replica_of_prompt):
        dp = top.dp_rank_of_sequence(prompt * 4)
        assert top.dp_rank_of[top.leader(replica)] == dp


def test_sequences_follow_megatrons_minibatch_slices():
    # 32 sequences, global batch 8 (4 optimizer steps), DP 4: 2 per rank per mini-batch.
    top = topology(1, DP4, gbs=8)
    assert top.sequences_of_dp_rank(1) == [2, 3, 10, 11, 18, 19, 26, 27]
    assert top.destinations(10) == (1,)
    assert topology(1, TP2_DP2).destinations(20) == (2, 3)  # DP rank 1 = ranks 2, 3
    everyone = sorted(s for d in range(4) for s in top.sequences_of_dp_rank(d))
    assert everyone == list(range(32))


def test_prompts_stay_on_their_node_when_no_replica_of_their_group_has_room():
    # Groups of 4 sequences span two DP ranks (gbs 8 / dp 4 = 2 each): half the prompts can't
    # be generated inside their group, but all stay on the node of their DP rank.
    top = topology(1, DP4, node_of=[0, 0, 1, 1], gbs=8)
    for prompt, replica in enumerate(top.replica_of_prompt):
        dp = top.dp_rank_of_sequence(prompt * 4)
        assert top.node_of[top.leader(replica)] == top.node_of[top.ranks_of_dp_rank(dp)[0]]


def test_more_replicas_than_prompts_leaves_some_idle():
    top = topology(1, DP4, prompts=2, gbs=8)
    assert sorted(len(top.prompts_of_replica(j)) for j in range(4)) == [0, 0, 1, 1]


def test_bad_layouts_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="do not divide the world"):
        topology(3, DP4)
    with pytest.raises(ValueError, match="spans nodes"):
        topology(2, DP4, node_of=[0, 1, 1, 1])
    with pytest.raises(ValueError, match="not a multiple of the global batch"):
        topology(1, DP4, gbs=12)
