"""Who generates which prompts, and who trains on which sequences (pure, no process group).

The world is split into rollout replicas of ``rollout_tensor_parallel_size`` consecutive ranks
(one engine each; its first rank, the leader, holds the finished samples). Each replica
generates whole prompt groups. Every sequence of the step has one data-parallel (DP) rank that
trains on it; the ranks of that DP rank's model-parallel group (TP x CP x PP) receive it.

Two rules make a step independent of how many replicas there are:

- sequence ``s`` (prompt-major: prompt ``s // G``, generation ``s % G``) trains on the DP rank
  Megatron would give it in a global batch: mini-batch ``s // GBS``, then DP slice of that
  mini-batch. Whatever the replicas, each DP rank gets the same sequences in the same order.
- sampling seeds are derived per prompt index of the step, not per replica.

Prompts go to replicas by locality: a prompt goes to a replica that holds a rank of the DP rank
its sequences train on (then no byte leaves that model-parallel group), else to one on the
same node, else anywhere (the first such replica with room, so shares stay contiguous); every
replica gets an equal share (+-1 prompt).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class RolloutTopology:
    """Replicas, the DP rank and node of every global rank, and the step's sizes."""

    replica_size: int
    dp_rank_of: tuple[int, ...]  # DP rank of each global rank
    node_of: tuple[int, ...]  # node index of each global rank
    num_prompts: int  # prompts per step
    num_generations: int
    global_batch_size: int  # sequences per optimizer step

    def __post_init__(self) -> None:
        world = len(self.dp_rank_of)
        if self.replica_size < 1 or world % self.replica_size:
            raise ValueError(
                f"rollout replicas of {self.replica_size} ranks do not divide the world "
                f"({world} ranks)"
            )
        for start in range(0, world, self.replica_size):
            nodes = set(self.node_of[start : start + self.replica_size])
            if len(nodes) > 1:
                raise ValueError(
                    f"rollout replica of ranks {start}..{start + self.replica_size - 1} spans "
                    f"nodes {sorted(nodes)}: a replica must stay within one node"
                )
        if self.num_sequences % self.global_batch_size:
            raise ValueError(
                f"{self.num_sequences} sequences per step are not a multiple of the global "
                f"batch size ({self.global_batch_size})"
            )
        if self.global_batch_size % self.dp_size:
            raise ValueError(
                f"global batch size ({self.global_batch_size}) is not a multiple of the "
                f"data-parallel size ({self.dp_size})"
            )

    @classmethod
    def single(cls, world_size: int, **sizes) -> RolloutTopology:
        """One replica over the whole world (rollout processes fed by rank 0)."""
        return cls(replica_size=world_size, **sizes)

    # ---- replicas ---------------------------------------------------------------------------

    @property
    def world_size(self) -> int:
        return len(self.dp_rank_of)

    @property
    def num_replicas(self) -> int:
        return self.world_size // self.replica_size

    def replica_ranks(self, replica: int) -> tuple[int, ...]:
        start = replica * self.replica_size
        return tuple(range(start, start + self.replica_size))

    def replica_of(self, rank: int) -> int:
        return rank // self.replica_size

    def leader(self, replica: int) -> int:
        return replica * self.replica_size

    def is_leader(self, rank: int) -> bool:
        return rank % self.replica_size == 0

    # ---- data parallelism -------------------------------------------------------------------

    @property
    def dp_size(self) -> int:
        return max(self.dp_rank_of) + 1

    @property
    def num_sequences(self) -> int:
        return self.num_prompts * self.num_generations

    def dp_rank_of_sequence(self, sequence: int) -> int:
        """Mini-batch ``s // GBS``, then the DP slice of that mini-batch."""
        per_rank = self.global_batch_size // self.dp_size
        return (sequence % self.global_batch_size) // per_rank

    def sequences_of_dp_rank(self, dp_rank: int) -> list[int]:
        """Global sequence indices DP rank ``dp_rank`` trains on, in training order."""
        return [s for s in range(self.num_sequences) if self.dp_rank_of_sequence(s) == dp_rank]

    @cached_property
    def _ranks_by_dp(self) -> tuple[tuple[int, ...], ...]:
        return tuple(
            tuple(r for r, d in enumerate(self.dp_rank_of) if d == dp) for dp in range(self.dp_size)
        )

    def ranks_of_dp_rank(self, dp_rank: int) -> tuple[int, ...]:
        """The model-parallel group (TP x CP x PP ranks) of data-parallel rank ``dp_rank``."""
        return self._ranks_by_dp[dp_rank]

    # ---- prompts -> replicas ----------------------------------------------------------------

    @cached_property
    def replica_of_prompt(self) -> tuple[int, ...]:
        """The replica that generates each prompt of a step (see the module docstring)."""
        n, p = self.num_replicas, self.num_prompts
        room = [p // n + (1 if j < p % n else 0) for j in range(n)]
        touches = [{self.dp_rank_of[r] for r in self.replica_ranks(j)} for j in range(n)]
        nodes = [self.node_of[self.leader(j)] for j in range(n)]
        owner = []
        for prompt in range(p):
            dp = self.dp_rank_of_sequence(prompt * self.num_generations)
            dp_nodes = {self.node_of[r] for r in self.ranks_of_dp_rank(dp)}

            def preference(j: int, dp=dp, dp_nodes=dp_nodes) -> tuple[int, int]:
                # The first replica with room keeps a replica's prompts contiguous.
                return (0 if dp in touches[j] else 1 if nodes[j] in dp_nodes else 2, j)

            chosen = min((j for j in range(n) if room[j] > 0), key=preference)
            room[chosen] -= 1
            owner.append(chosen)
        return tuple(owner)

    def prompts_of_replica(self, replica: int) -> list[int]:
        return [i for i, j in enumerate(self.replica_of_prompt) if j == replica]

    def destinations(self, sequence: int) -> tuple[int, ...]:
        """Global ranks that receive sequence ``sequence`` (its DP rank's model-parallel group)."""
        return self.ranks_of_dp_rank(self.dp_rank_of_sequence(sequence))

    def describe(self) -> str:
        """One line for the start-up log."""
        local = sum(
            self.dp_rank_of_sequence(i * self.num_generations)
            in {self.dp_rank_of[r] for r in self.replica_ranks(j)}
            for i, j in enumerate(self.replica_of_prompt)
        )
        return (
            f"{self.num_replicas} rollout replica(s) of {self.replica_size} rank(s), "
            f"{self.num_prompts} prompts per step ({self.num_prompts // self.num_replicas}"
            f"{'+' if self.num_prompts % self.num_replicas else ''} each); "
            f"{local}/{self.num_prompts} prompts generated inside the model-parallel group "
            f"that trains on them"
        )
