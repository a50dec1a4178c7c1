"""`benchmarks/nccl_broadcast.py` (the flat-broadcast bound of the disaggregated weight sync)
on CPU with gloo: every receiver gets the bytes whole, flat and in buckets that do not divide
the buffer evenly, and the bandwidth is the bytes over the median time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import REPO, quiet_env


def test_three_ranks_receive_every_byte_flat_and_in_buckets(tmp_path: Path):
    torchrun = Path(sys.executable).with_name("torchrun")
    num_bytes = 3 * 2**20 + 7  # four 1 MiB buckets, the last one 7 bytes
    command = [str(torchrun), "--standalone", "--nproc-per-node", "3",
               str(REPO / "benchmarks" / "nccl_broadcast.py"), "--bytes", str(num_bytes),
               "--bucket-mb", "1", "--reps", "2", "--warmup", "1",
               "--json", str(tmp_path / "r.json")]  # fmt: skip
    proc = subprocess.run(command, env=quiet_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["ranks"], report["backend"], report["bytes"]) == (3, "gloo", num_bytes)
    for way in ("flat", "buckets"):
        result = report[way]
        assert result["received_whole"] is True
        assert len(result["all_s"]) == 2 and min(result["all_s"]) > 0
        assert abs(result["GBps"] - num_bytes / result["median_s"] / 1e9) < 1e-9
