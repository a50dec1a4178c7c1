"""Sequences from the replica that generated them to the ranks that train on them, as tensors.

Each replica leader encodes every one of its sequences once per destination rank (the ranks of
the sequence's data-parallel rank, `RolloutTopology.destinations`); one `all_to_all_single` of
sizes and one of payloads move them. A rank receives exactly the sequences its data-parallel
rank trains on, nothing of the rest of the step. Under NCCL the tensors travel from GPU to GPU.

Record of one sequence (float64, exact for token ids < 2**53 and for float32 values)::

    [sequence id, prompt length P, completion length C, advantage, trained (1, or 0 for a
     completion left out of the loss: overlong filtering), reward,
     prompt ids (P), completion ids (C), rollout log-probs (C)]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from oumi_megatron.step.rollout import RolloutBatch
from oumi_megatron.step.topology import RolloutTopology
from oumi_megatron.training.step_batches import StepSequences

_HEADER = 6


class ExchangeError(RuntimeError):
    """The sequences a rank received are not the ones its data-parallel rank trains on."""


@dataclass(frozen=True)
class ExchangeStats:
    """What this rank received and sent in one step."""

    sequences_received: int
    sequences_trained: int
    bytes_received: int
    bytes_sent_off_node: int

    def as_tally(self) -> dict[str, tuple[str, float]]:
        return {
            "exchange/sequences_received": ("sum", float(self.sequences_received)),
            "exchange/sequences_trained": ("sum", float(self.sequences_trained)),
            "exchange/bytes_received": ("sum", float(self.bytes_received)),
            "exchange/bytes_received_max": ("max", float(self.bytes_received)),
            "exchange/bytes_off_node": ("sum", float(self.bytes_sent_off_node)),
        }


def _encode(
    sequence: int, prompt, completion, logprobs, advantage: float, trained: bool, reward: float
) -> torch.Tensor:
    header = [float(sequence), float(len(prompt)), float(len(completion)), float(advantage),
              float(trained), float(reward)]  # fmt: skip
    return torch.tensor(
        header + [float(t) for t in prompt] + [float(t) for t in completion] + list(logprobs),
        dtype=torch.float64,
    )


def _decode(payload: torch.Tensor) -> dict[int, tuple]:
    """sequence id -> (prompt ids, completion ids, rollout log-probs, advantage, trained,
    reward)."""
    records = {}
    values = payload.tolist()
    position = 0
    while position < len(values):
        sequence, p, c, advantage, trained, reward = values[position : position + _HEADER]
        p, c = int(p), int(c)
        body = position + _HEADER
        prompt = [int(t) for t in values[body : body + p]]
        completion = [int(t) for t in values[body + p : body + p + c]]
        logprobs = payload[body + p + c : body + p + 2 * c].to(torch.float32)
        if int(sequence) in records:
            raise ExchangeError(f"sequence {int(sequence)} received twice")
        records[int(sequence)] = (prompt, completion, logprobs, advantage, trained > 0, reward)
        position = body + p + 2 * c
    return records


def _device() -> torch.device:
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def route_sequences(
    topology: RolloutTopology,
    rank: int,
    rollouts: RolloutBatch,
    advantages: list[float],
    trained: list[bool] | None = None,
    rewards: list[float] | None = None,
) -> tuple[StepSequences, ExchangeStats]:
    """This rank's training sequences (its DP rank's, in training order). Collective.

    ``trained[k]`` False leaves completion k out of the loss (its mask is all zero); None: all
    are trained."""
    world = topology.world_size
    outgoing: list[list[torch.Tensor]] = [[] for _ in range(world)]
    for k, sequence in enumerate(rollouts.sequence_ids):
        record = _encode(sequence, rollouts.prompt_ids[k], rollouts.completion_ids[k],
                         rollouts.rollout_logprobs[k], advantages[k],
                         True if trained is None else trained[k],
                         0.0 if rewards is None else rewards[k])  # fmt: skip
        for destination in topology.destinations(sequence):
            outgoing[destination].append(record)
    send_sizes = [sum(r.numel() for r in records) for records in outgoing]
    payload = _exchange(outgoing, send_sizes, world)
    records = _decode(payload)
    expected = topology.sequences_of_dp_rank(topology.dp_rank_of[rank])
    if sorted(records) != expected:
        missing = sorted(set(expected) - set(records))[:8]
        extra = sorted(set(records) - set(expected))[:8]
        raise ExchangeError(
            f"rank {rank} received {len(records)} sequences but trains on {len(expected)} "
            f"(missing {missing}, unexpected {extra})"
        )
    prompts = [records[s][0] for s in expected]
    completions = [records[s][1] for s in expected]
    sequences = StepSequences.from_rollouts(
        prompts,
        completions,
        [records[s][2] for s in expected],
        [records[s][3] for s in expected],
        trained=[records[s][4] for s in expected],
        sequence_ids=list(expected),
        rewards=[records[s][5] for s in expected],
    )
    my_node = topology.node_of[rank]
    off_node = sum(size for dst, size in enumerate(send_sizes) if topology.node_of[dst] != my_node)
    stats = ExchangeStats(len(records), len(expected), payload.numel() * 8, off_node * 8)
    return sequences, stats


def _exchange(outgoing: list[list[torch.Tensor]], send_sizes: list[int], world: int):
    """One all-to-all of sizes, one of payloads (the local copy alone without a group)."""
    device = _device()
    send = torch.cat([r for records in outgoing for r in records] or [torch.zeros(0)])
    if world == 1:
        return send
    sizes = torch.tensor(send_sizes, dtype=torch.int64, device=device)
    recv_sizes = torch.empty_like(sizes)
    dist.all_to_all_single(recv_sizes, sizes)
    recv_split = recv_sizes.tolist()
    received = torch.empty(sum(recv_split), dtype=torch.float64, device=device)
    dist.all_to_all_single(received, send.to(device, torch.float64),
                           output_split_sizes=recv_split, input_split_sizes=send_sizes)  # fmt: skip
    return received.cpu()
