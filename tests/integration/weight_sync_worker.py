"""torchrun worker for test_weight_sync_broadcast.py (2 gloo ranks).

Rank 0 plays the trainer: it sends model A's HF state dict, in several buckets, to rank 1,
which plays a rollout process whose TorchRolloutEngine starts from model B. Done twice: over
a ``new_group`` of the world and over a standalone TCPStore group. Every rank saves what it
has (state dict + sampled completions) for the test to compare exactly.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from oumi_megatron.processes import free_port
from oumi_megatron.rollout import SamplingParams
from oumi_megatron.rollout.torch_engine import TorchRolloutEngine
from oumi_megatron.rollout.weight_sync import (
    StoreRendezvous,
    make_weight_receiver,
    make_weight_sender,
    new_weight_sync_group,
)

PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14]]
PARAMS = SamplingParams(n=2, temperature=0.9, max_new_tokens=6, seed=3)
BUCKET_BYTES = 96 * 1024  # the tiny model is ~0.9 MB: about ten buckets


def _snapshot(engine: TorchRolloutEngine, stats) -> dict:
    samples = engine.generate(PROMPTS, PARAMS)
    return {
        "state": {k: v.clone() for k, v in engine.model.state_dict().items()},
        "ids": [s.completion_ids for s in samples],
        "logprobs": [s.completion_logprobs for s in samples],
        "stats": None if stats is None else vars(stats),
    }


def main(source_dir: str, target_dir: str, out_dir: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    out = Path(out_dir)
    source_engine = TorchRolloutEngine(source_dir) if rank == 0 else None

    def weights():
        assert source_engine is not None
        yield from source_engine.model.state_dict().items()

    # 1) A dedicated group inside the world (new_group is collective over every rank).
    group, src = new_weight_sync_group(0, [1], backend="gloo")
    if rank == 0:
        stats = make_weight_sender("gloo", group=group, src=src, bucket_bytes=BUCKET_BYTES).send(
            weights()
        )
        torch.save(_snapshot(source_engine, stats), out / "sender.pt")
    else:
        engine = TorchRolloutEngine(target_dir)
        stats = make_weight_receiver("gloo", group=group, src=src).receive_into(engine)
        torch.save(_snapshot(engine, stats), out / "receiver_group.pt")

    # 2) A standalone TCPStore group, as between separately launched jobs.
    port = [free_port() if rank == 0 else 0]
    dist.broadcast_object_list(port, src=0)
    rendezvous = StoreRendezvous("127.0.0.1", port[0], rank, 2, timeout_s=120)
    if rank == 0:
        sender = make_weight_sender("gloo", rendezvous=rendezvous, bucket_bytes=BUCKET_BYTES)
        sender.send(weights())
        sender.close()
    else:
        engine = TorchRolloutEngine(target_dir)
        receiver = make_weight_receiver("gloo", rendezvous=rendezvous)
        stats = receiver.receive_into(engine)
        receiver.close()
        torch.save(_snapshot(engine, stats), out / "receiver_store.pt")

    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main(*sys.argv[1:4])
