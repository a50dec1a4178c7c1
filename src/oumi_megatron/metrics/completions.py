"""`grpo.log_completions`: every completion of a logged step in output_dir/completions.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import torch.distributed as dist


def append_completions(path: Path, step: int, rollouts, scored, is_main: bool) -> None:
    """Gather this rank's completions (`RolloutBatch`) with their rewards and advantages
    (`ScoredBatch`) on rank 0 and append them to ``path`` in sequence order, one JSON line each.
    Collective: every rank calls it (ranks without completions pass empty batches)."""
    records = [{"step": step, "sequence": rollouts.sequence_ids[i],
                "sample_id": rollouts.sample_ids[i], "prompt": rollouts.prompts_text[i],
                "completion": rollouts.completions_text[i], "reward": scored.rewards[i],
                "advantage": scored.advantages[i]} for i in range(len(rollouts))]  # fmt: skip
    gathered = [records]
    if dist.is_initialized() and dist.get_world_size() > 1:
        gathered = [None] * dist.get_world_size() if is_main else None
        dist.gather_object(records, gathered, dst=0)
    if not is_main:
        return
    every = sorted((r for part in gathered for r in part), key=lambda r: r["sequence"])
    with path.open("a") as out:
        out.writelines(json.dumps(record) + "\n" for record in every)
