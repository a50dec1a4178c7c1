"""One family's weight sync from Megatron into a colocated vLLM engine, on one GPU.

    python tests/gpu/family_sync_worker.py ARCH ROOT OUT.json

The trainer's own path, in one process as the trainer runs it (``weight_sync_method: auto``,
vLLM's external launcher in a one-rank NCCL world): a bf16 Megatron model of tiny model B, a
bf16 vLLM engine started from tiny model A (other random weights), then

1. ``export``: the first sync streams Bridge's export into vLLM's ``load_weights``;
2. vLLM is put back on A's weights (plain ``load_weights`` of A's state dict);
3. ``direct``: the second sync copies straight from Megatron's parameters into vLLM's weights
   (``step/direct_copy.py``) where the family allows it, else exports again.

After each sync vLLM samples, and its log-probs are compared with teacher-forced log-probs of
Hugging Face's model B (bf16-rounded weights, fp32 arithmetic) and of model A: close to B, far
from A. One vLLM engine per process: the test runs one process per family.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

# vLLM's share of the GPU: several families may run side by side on one GPU.
MEMORY = float(os.environ.get("FAMILY_VLLM_MEMORY", "0.2"))
PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19], [15], [40, 41, 42, 43]]


def _hf(model_dir: Path):
    """fp32 arithmetic on bf16-rounded weights (what vLLM holds), attention as published."""
    from transformers import AutoModelForCausalLM

    from oumi_megatron.rollout.hf_attention import hf_config_and_attention

    config, attention = hf_config_and_attention(model_dir, preferred="eager")
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), config=config, dtype=torch.bfloat16, attn_implementation=attention
    )
    return model.float().cuda().eval()


def _checkpoint(model_dir: Path):
    """A's tensors under their checkpoint names, bf16, on the GPU."""
    from safetensors.torch import load_file

    for path in sorted(model_dir.glob("*.safetensors")):
        for name, tensor in load_file(path).items():
            yield name, tensor.to(torch.bfloat16).cuda()


def _diffs(model, samples, params) -> torch.Tensor:
    from oumi_megatron.rollout.logprob_check import teacher_forced_logprobs

    refs = teacher_forced_logprobs(model, samples, params)
    pairs = zip(samples, refs, strict=True)
    return torch.cat([(torch.tensor(s.completion_logprobs) - r.cpu()).abs() for s, r in pairs])


def _check(engine, hf, params) -> dict:
    samples = engine.generate(PROMPTS, params)
    to_b, to_a = _diffs(hf["b"], samples, params), _diffs(hf["a"], samples, params)
    return {
        "tokens": int(to_b.numel()),
        "mean_to_b": to_b.mean().item(),
        "max_to_b": to_b.max().item(),
        "mean_to_a": to_a.mean().item(),
    }


def run(arch: str, root: Path) -> dict:
    from oumi_megatron.model.bridge import load_megatron_model
    from oumi_megatron.model.export_index import index_export
    from oumi_megatron.parallel.layout import ParallelLayout
    from oumi_megatron.parallel.startup import init_distributed, init_model_parallel
    from oumi_megatron.rollout import SamplingParams
    from oumi_megatron.rollout.transports import InProcessWeightSender
    from oumi_megatron.rollout.vllm_engine import VllmRolloutEngine
    from oumi_megatron.step.sync import build_weight_sync
    from oumi_megatron.testing.tiny_models import build_tiny_pair

    torch.backends.cuda.matmul.allow_tf32 = False
    notes = _direct_copy_notes()
    a, b = build_tiny_pair(arch, root, vllm_kernels=True)
    init_distributed("nccl")
    init_model_parallel(ParallelLayout())
    start = time.perf_counter()
    loaded = load_megatron_model(str(b), root / "megatron_b", ParallelLayout(), torch.bfloat16)
    result = {"arch": arch, "megatron_s": time.perf_counter() - start}
    start = time.perf_counter()
    engine = VllmRolloutEngine(
        a, dtype="bfloat16", gpu_memory_utilization=MEMORY, max_model_len=128, enforce_eager=True,
        external_launcher=True,
    )  # fmt: skip
    result["vllm_start_s"] = time.perf_counter() - start
    hf = {"a": _hf(a), "b": _hf(b)}
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=16, seed=5)
    result["before"] = _check(engine, hf, params)

    def export():
        return loaded.bridge.export_hf_weights(loaded.chunks, cpu=False, show_progress=False)

    sync = build_weight_sync(
        "auto", export, engine, enabled=True, is_writer=True, bucket_bytes=1 << 20,
        directory=root / "weight_sync", index_export=lambda: index_export(loaded.bridge, loaded.chunks),
    )  # fmt: skip
    for round_ in ("export", "direct"):
        if round_ == "direct":  # back to A's weights, the way a plain load would put them
            InProcessWeightSender(engine, bucket_bytes=1 << 20).send(_checkpoint(a))
            result["restored"] = _check(engine, hf, params)
        start = time.perf_counter()
        stats = sync.sync()
        result[round_] = {
            **_check(engine, hf, params),
            "sync_s": time.perf_counter() - start,
            "sync_direct": stats.get("sync/direct"),
        }
    engine.shutdown()
    result["direct_copy_notes"] = notes
    return result


def _direct_copy_notes() -> list[str]:
    """The trainer's INFO lines on the copy plan and the direct copies (why they are off)."""
    import logging

    notes: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "direct" in (message := record.getMessage()) or "copy plan" in message:
                notes.append(message)

    for name in ("oumi_megatron.step", "oumi_megatron.rollout.copy_plan"):
        logging.getLogger(name).addHandler(Keep(logging.INFO))
        logging.getLogger(name).setLevel(logging.INFO)
    return notes


def main() -> None:
    arch, root, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    try:
        result = run(arch, root)
    except Exception:  # the result file says why, for the test's message and the device's log
        out.write_text(json.dumps({"arch": arch, "error": traceback.format_exc()[-4000:]}))
        raise
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
