"""One process: the parity gate on a converted tiny model passes, then catches a weight of
decoder layer 1 changed by 1% (as a wrong conversion would leave it). Prints one JSON line."""

from __future__ import annotations

import json
import os
import sys
import time

for key, value in {"MASTER_ADDR": "127.0.0.1", "RANK": "0", "WORLD_SIZE": "1",
                   "LOCAL_RANK": "0"}.items():  # fmt: skip
    os.environ.setdefault(key, value)

import torch  # noqa: E402

from oumi_megatron.model.bridge import load_megatron_model  # noqa: E402
from oumi_megatron.model.parity_gate import ParityGateError, _decoder_layers, check_parity  # noqa: E402
from oumi_megatron.parallel.layout import ParallelLayout  # noqa: E402
from oumi_megatron.parallel.startup import init_distributed, init_model_parallel  # noqa: E402


def main() -> None:
    model_dir, work = sys.argv[1], sys.argv[2]
    init_distributed()
    init_model_parallel(ParallelLayout())
    start = time.perf_counter()
    loaded = load_megatron_model(model_dir, f"{work}/megatron_checkpoint", ParallelLayout())
    load_seconds = time.perf_counter() - start
    passed = check_parity(loaded.chunks, model_dir, torch.float32)
    fc2 = _decoder_layers(loaded.chunks[0])[1].mlp.linear_fc2.weight
    with torch.no_grad():
        fc2.mul_(1.01)
    try:
        check_parity(loaded.chunks, model_dir, torch.float32)
        caught = None
    except ParityGateError as error:
        caught = {"message": str(error), "exit_code": error.exit_code}
    print(json.dumps({"max_abs_diff": passed.max_abs_diff, "gate_seconds": passed.seconds,
                      "load_seconds": load_seconds, "caught": caught}))  # fmt: skip


if __name__ == "__main__":
    main()
