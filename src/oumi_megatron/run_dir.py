"""A training output directory belongs to one run.

`claim` records the run's identity in ``output_dir/run.json`` (a random id, the start time, a
hash of the config). A fresh run (no resume) is refused in a directory that holds another run's
results (checkpoints, an exported model, logged metrics): otherwise pruning and ``latest`` would
mix the two runs' step numbers, and a later ``--resume latest`` would continue the other run.
The choices are in the message: resume it, pick another ``training.output_dir``, or
``megatron.overwrite_output_dir: true``, which deletes the old run's results first. The
converted model (``megatron_checkpoint/``) is a cache of the source checkpoint, not a result: it
is kept. A resume keeps the id of the run it continues; resuming an earlier step sets the
later checkpoints aside (``training.checkpoint.set_aside_later``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path

RUN_FILE = "run.json"
RESULTS = ("checkpoints", "hf_model", "metrics.jsonl", "completions.jsonl", "reward_curve.png",
           "tensorboard", "weight_sync", RUN_FILE)  # fmt: skip


def previous_results(output_dir: Path) -> list[str]:
    """What in `output_dir` an earlier run left: checkpoints, exported models, metrics."""
    found = []
    checkpoints = output_dir / "checkpoints"
    if checkpoints.is_dir():
        found += sorted(f"checkpoints/{p.name}" for p in checkpoints.iterdir()
                        if p.name.startswith(("step_", ".step_")))  # fmt: skip
    if output_dir.is_dir():
        found += sorted(p.name for p in output_dir.glob("hf_model*") if p.is_dir())
    for name in ("metrics.jsonl", "completions.jsonl"):
        logged = output_dir / name
        if logged.exists() and logged.stat().st_size > 0:
            found.append(name)
    return found


def check_fresh_run(output_dir: Path, resuming: bool, overwrite: bool) -> str | None:
    """The problem with starting here, or None. `resuming`: a resume was asked for."""
    if resuming or overwrite:
        return None
    found = previous_results(output_dir)
    if not found:
        return None
    shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
    return (
        f"training.output_dir ({output_dir}) holds another run's results ({shown}). A fresh run "
        f"there would mix its checkpoints with them. Fix: continue that run with --resume latest, "
        f"choose a new training.output_dir, or set megatron.overwrite_output_dir=true to delete "
        f"them first."
    )


def check_writable(output_dir: Path, needed_bytes: int) -> str | None:
    """The problem with writing `needed_bytes` under `output_dir` (nothing is created)."""
    existing = output_dir.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return (
            f"training.output_dir ({output_dir}) cannot be written: {existing} is not a "
            f"writable directory. Fix: choose a training.output_dir you can write to."
        )
    free = shutil.disk_usage(existing).free
    if free < needed_bytes:
        return (
            f"training.output_dir ({output_dir}): {free / 2**30:.1f} GiB free on its disk, the "
            f"run needs at least {needed_bytes / 2**30:.1f} GiB (the converted model and the "
            f"exported one; checkpoints need more). Fix: free space or choose another "
            f"training.output_dir."
        )
    return None


def claim(output_dir: Path, config_text: str, fresh: bool, overwrite: bool) -> str:
    """Rank 0, before any work: a fresh run (deleting an old run's results when `overwrite`)
    writes a new identity; a resumed one keeps the recorded identity. Returns the run id."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / RUN_FILE
    if not fresh and path.exists():
        return json.loads(path.read_text())["run_id"]
    if fresh and overwrite:
        for name in RESULTS:
            target = output_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        for model in output_dir.glob("hf_model*"):
            shutil.rmtree(model, ignore_errors=True)
    run_id = uuid.uuid4().hex[:12]
    identity = {
        "run_id": run_id,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config_sha256": hashlib.sha256(config_text.encode()).hexdigest(),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(identity, indent=1) + "\n")
    tmp.replace(path)
    return run_id
