"""Checks of the CPU compatibility layer, run in a fresh interpreter (it patches globals)."""

from __future__ import annotations

import json
import sys

import torch


def main() -> None:
    from oumi_megatron.parallel.cpu_compat import (
        CpuRNGStatesTracker,
        apply_cpu_compat,
        import_megatron_bridge,
    )

    report: dict[str, object] = {}
    try:
        torch.cuda.current_device()
        report["current_device_failed_before"] = False
    except Exception:
        report["current_device_failed_before"] = True
    apply_cpu_compat()
    report["current_device_after"] = str(torch.cuda.current_device())

    from megatron.core.tensor_parallel import random as mp_random

    tracker = mp_random.get_cuda_rng_tracker()
    report["tracker_is_cpu"] = isinstance(tracker, CpuRNGStatesTracker)
    tracker.reset()
    tracker.add("stream", 123)
    torch.manual_seed(0)
    outer_before = torch.get_rng_state()
    with tracker.fork("stream"):
        first = torch.rand(3)
    report["outer_state_restored"] = bool(torch.equal(outer_before, torch.get_rng_state()))
    report["stream_matches_seed"] = bool(
        torch.equal(first, torch.rand(3, generator=torch.Generator().manual_seed(123)))
    )
    with tracker.fork("stream"):
        second = torch.rand(3)
    report["stream_advances"] = not torch.equal(first, second)

    from megatron.core.transformer.utils import get_default_causal_mask

    mask = get_default_causal_mask(3)
    report["causal_mask"] = mask.tolist()

    import_megatron_bridge()
    from megatron.core.extensions import transformer_engine as te_ext  # noqa: F401
    from megatron.core.models.gpt import gpt_layer_specs

    report["te_left_in_sys_modules"] = any(m.startswith("transformer_engine") for m in sys.modules)
    report["gpt_specs_have_te"] = bool(getattr(gpt_layer_specs, "HAVE_TE", False))
    from megatron.bridge import AutoBridge  # noqa: F401

    report["bridge_imported"] = True
    print(json.dumps(report))


if __name__ == "__main__":
    main()
