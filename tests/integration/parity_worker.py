"""torchrun worker: HF ⇄ Megatron parity for every fixture and layout.

Re-building Megatron's groups per layout inside one world keeps the heavy imports (Megatron,
Bridge: ~20 s per process on 2 cores) to one per process for many layouts. A launch runs the
cases that need more than half its ranks (all of them at 2 ranks): the test launches 2 ranks
for the 1- and 2-rank layouts and 4 for the rest, so no process waits on an idle core's
neighbour needlessly. Writes one JSON line per (fixture, layout) to argv[2] (rank 0).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from oumi_megatron.model.bridge import export_hf_model, load_megatron_model
from oumi_megatron.model.forward import forward_logits, packed_logits
from oumi_megatron.parallel.layout import ParallelLayout
from oumi_megatron.parallel.pipeline_split import PipelineSplit
from oumi_megatron.parallel.startup import init_distributed, init_model_parallel

# Lengths of the packed case's sequences (cut from the case's 24-token rows).
PACKED_LENGTHS = (24, 11, 17, 6)
# The GPU image lacks nvidia-modelopt, which Bridge's safetensors export imports.
SKIP_EXPORT = os.environ.get("PARITY_SKIP_EXPORT") == "1"

CASES = [
    ("llama", ParallelLayout(tp=1)),
    ("llama", ParallelLayout(tp=2)),
    ("llama", ParallelLayout(pp=2)),
    ("llama", ParallelLayout(tp=2, pp=2)),
    ("llama", ParallelLayout(pp=2, vpp=2)),
    # Uneven pipelines (Megatron's num_layers_in_first/last_pipeline_stage): 1 + 3 layers.
    ("llama", ParallelLayout(pp=2, split=PipelineSplit(first_stage_layers=1))),
    # Context parallelism: each sequence in 2·CP chunks, K/V all-gathered over the CP group.
    ("llama", ParallelLayout(cp=2)),
    ("llama", ParallelLayout(cp=4)),
    ("llama", ParallelLayout(tp=2, cp=2)),
    ("qwen2", ParallelLayout(pp=2, cp=2)),
    ("qwen2", ParallelLayout(tp=1)),
    ("qwen2", ParallelLayout(tp=2)),
    ("qwen2", ParallelLayout(pp=2)),
    ("qwen2", ParallelLayout(tp=2, pp=2)),
    ("qwen2", ParallelLayout(tp=2, pp=2, split=PipelineSplit(last_stage_layers=1))),
    ("qwen3", ParallelLayout(tp=1)),
    ("qwen3", ParallelLayout(tp=2)),
    ("qwen3", ParallelLayout(pp=2)),
    ("mistral", ParallelLayout(tp=1)),
    ("mistral", ParallelLayout(tp=2)),
    ("mistral", ParallelLayout(pp=2)),
    ("qwen3_moe", ParallelLayout(tp=1)),
    ("qwen3_moe", ParallelLayout(ep=2)),
    ("qwen3_moe", ParallelLayout(tp=2, ep=2)),
    ("qwen3_moe", ParallelLayout(tp=2)),
    ("qwen3_moe", ParallelLayout(pp=2)),
    # Dense first layer, shared expert, expert bias; DeepSeek-V3: multi-latent attention.
    ("deepseek_v3", ParallelLayout(tp=1)),
    ("deepseek_v3", ParallelLayout(ep=2)),
    ("deepseek_v3", ParallelLayout(pp=2)),
    ("deepseek_v3", ParallelLayout(tp=2)),
    ("glm4_moe", ParallelLayout(tp=1)),
    ("glm4_moe", ParallelLayout(ep=2)),
    ("glm4_moe", ParallelLayout(pp=2)),
    ("glm4_moe", ParallelLayout(tp=2)),
    # Mixtral: Megatron-Bridge has no bridge; ours (model/bridges.py).
    ("mixtral", ParallelLayout(tp=1)),
    ("mixtral", ParallelLayout(ep=2)),
    ("mixtral", ParallelLayout(pp=2)),
    ("mixtral", ParallelLayout(tp=2)),
    # OLMoE: Megatron-Bridge's own attention module (Q/K norms over the whole width; at TP2
    # the norm's mean square is summed over the ranks: model/split_norm.py).
    ("olmoe", ParallelLayout(tp=1)),
    ("olmoe", ParallelLayout(ep=2)),
    ("olmoe", ParallelLayout(pp=2)),
    ("olmoe", ParallelLayout(tp=2)),
    # Gemma 3: zero-centred and sandwich norms, sliding windows (also split by context
    # parallelism), local and global rotary bases, tied embeddings (model/gemma.py).
    ("gemma3", ParallelLayout(tp=1)),
    ("gemma3", ParallelLayout(tp=2)),
    ("gemma3", ParallelLayout(pp=2)),
    ("gemma3", ParallelLayout(cp=2)),
    # Gemma 2: soft-capped attention and final logits, windows on every second layer.
    ("gemma2", ParallelLayout(tp=1)),
    ("gemma2", ParallelLayout(tp=2)),
    ("gemma2", ParallelLayout(pp=2)),
    ("gemma2", ParallelLayout(cp=2)),
    # GPT-OSS: attention sinks, biased experts (expert biases need ETP1), clamped SwiGLU.
    ("gpt_oss", ParallelLayout(tp=1)),
    ("gpt_oss", ParallelLayout(tp=2, etp=1)),
    ("gpt_oss", ParallelLayout(pp=2)),
    ("gpt_oss", ParallelLayout(ep=2)),
]


@functools.cache
def source_reference(model_dir: Path) -> torch.Tensor:
    """The source model's logits on the cases' tokens: computed once per fixture and process."""
    return hf_reference(model_dir, case_tokens())


def case_tokens() -> torch.Tensor:
    return torch.randint(0, 380, (4, 24), generator=torch.Generator().manual_seed(7))


def hf_reference(model_dir: Path, input_ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    from oumi_megatron.rollout.hf_attention import hf_config_and_attention

    config, attention = hf_config_and_attention(model_dir)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, config=config, dtype=torch.float32, attn_implementation=attention
    ).eval()
    with torch.no_grad():
        return model(input_ids).logits


def exported_tensors_identical(source: Path, exported: Path) -> tuple[bool, list[str]]:
    from safetensors.torch import load_file

    def tensors(directory: Path) -> dict[str, torch.Tensor]:
        merged: dict[str, torch.Tensor] = {}
        for f in sorted(directory.glob("*.safetensors")):
            merged.update(load_file(f))
        return merged

    src, out = tensors(source), tensors(exported)
    bad = sorted(set(src) ^ set(out))
    bad += [k for k in src.keys() & out.keys() if src[k].dtype != out[k].dtype]
    bad += [k for k in src.keys() & out.keys() if not torch.equal(src[k], out[k])]
    return not bad, bad


def run_case(arch: str, layout: ParallelLayout, fixtures: Path, out_root: Path) -> dict:
    init_model_parallel(layout)
    model_dir = fixtures / arch
    case_dir = out_root / arch
    loaded = load_megatron_model(str(model_dir), case_dir / "megatron_checkpoint", layout)
    input_ids = case_tokens()
    logits = forward_logits(loaded.chunks, input_ids, micro_batch_size=2)
    hf_dir = case_dir / f"hf_model_{str(layout).replace('×', '_')}"
    if not SKIP_EXPORT:
        export_hf_model(loaded, hf_dir)
    result = {"arch": arch, "layout": str(layout), "reused": loaded.reused_checkpoint}
    result["weights_seconds"] = loaded.weights_seconds
    if logits is not None:
        reference = source_reference(model_dir)
        result["max_abs_diff"] = (logits[..., : reference.shape[-1]] - reference).abs().max().item()
        result["argmax_equal"] = bool(
            torch.equal(logits[..., : reference.shape[-1]].argmax(-1), reference.argmax(-1))
        )
    if layout.cp == 1:
        result.update(
            packed_case(loaded.chunks, model_dir, input_ids, rows=layout.pp if layout.vpp else 1)
        )
    if layout.model_parallel_size == 1 and layout.ep == 1:
        result.update(sync_case(loaded, model_dir, case_dir / "weight_sync"))
    if dist.get_rank() == 0 and not SKIP_EXPORT:
        identical, mismatched = exported_tensors_identical(model_dir, hf_dir)
        reloaded = hf_reference(hf_dir, input_ids)
        result["export_identical"] = identical
        result["export_mismatched"] = mismatched[:5]
        result["export_logits_diff"] = (reloaded - source_reference(model_dir)).abs().max().item()
    return result


def packed_case(chunks, model_dir: Path, input_ids: torch.Tensor, rows: int) -> dict:
    """The case's rows cut to different lengths and packed end to end in one row (THD, as
    training packs them): each sequence's logits must be the padded row's prefix (causal),
    i.e. Hugging Face's. Windows (8 tokens) are shorter than the sequences."""
    lengths = PACKED_LENGTHS[: input_ids.shape[0]]
    sequences = [row[:n] for row, n in zip(input_ids, lengths, strict=True)]
    logits = packed_logits(chunks, sequences, rows)  # interleaved pipelines: PP micro-batches
    if logits is None:
        return {}
    reference = source_reference(model_dir)
    diffs = [
        (out[:, : reference.shape[-1]] - ref[:n]).abs().max().item()
        for out, ref, n in zip(logits, reference, lengths, strict=True)
    ]
    return {"packed_max_abs_diff": max(diffs)}


def sync_case(loaded, model_dir: Path, directory: Path) -> dict:
    """The trainer's colocated weight sync into a CPU rollout engine whose weights were zeroed:
    the first sync goes through Bridge's export, the second copies straight from the
    parameters (``step/direct_copy.py``); after each, the engine's weights must be the
    source's, bit for bit (this family's names, fused and tied tensors, stacked experts)."""
    from oumi_megatron.model.export_index import index_export
    from oumi_megatron.rollout.torch_engine import TorchRolloutEngine
    from oumi_megatron.step.sync import build_weight_sync

    engine = TorchRolloutEngine(model_dir)
    source = {k: v.clone() for k, v in engine.model.state_dict().items()}  # as loaded by HF

    def export():
        return loaded.bridge.export_hf_weights(loaded.chunks, cpu=True, show_progress=False)

    sync = build_weight_sync(
        "auto", export, engine, enabled=True, is_writer=dist.get_rank() == 0,
        bucket_bytes=1 << 16, directory=directory,
        index_export=lambda: index_export(loaded.bridge, loaded.chunks),
    )  # fmt: skip
    result = {}
    for round_ in ("sync_export", "sync_direct"):
        with torch.no_grad():
            for param in engine.model.parameters():
                param.zero_()
        direct = sync.sync()["sync/direct"]
        state = engine.model.state_dict()
        result[round_] = direct
        result[f"{round_}_identical"] = all(torch.equal(state[k], v) for k, v in source.items())
    return result


def stale_checkpoint_case(fixtures: Path, out_root: Path) -> dict:
    """Point llama's converted checkpoint directory at the qwen2 source: it must re-convert."""
    layout = ParallelLayout(tp=2)
    init_model_parallel(layout)
    checkpoint_dir = out_root / "llama" / "megatron_checkpoint"
    loaded = load_megatron_model(str(fixtures / "qwen2"), checkpoint_dir, layout)
    input_ids = torch.randint(0, 380, (2, 16), generator=torch.Generator().manual_seed(3))
    logits = forward_logits(loaded.chunks, input_ids)
    diff = (logits[..., :512] - hf_reference(fixtures / "qwen2", input_ids)).abs().max().item()
    manifest = json.loads((checkpoint_dir / "manifest.json").read_text())
    return {
        "case": "stale",
        "reused": loaded.reused_checkpoint,
        "max_abs_diff": diff,
        "manifest_source": manifest["source"],
    }


def ranks_needed(layout: ParallelLayout) -> int:
    return max(layout.model_parallel_size, layout.ep * (layout.etp or layout.tp) * layout.pp)


def main() -> None:
    """``parity_worker.py FIXTURES RESULTS [ARCHS|all] [CONVERTED_DIR]``. The stale-checkpoint
    case runs at 4 ranks, after the others."""
    fixtures, results_path = Path(sys.argv[1]), Path(sys.argv[2])
    selected = set(sys.argv[3].split(",")) if len(sys.argv) > 3 and sys.argv[3] != "all" else None
    init_distributed()
    # Shared by launches of different world sizes: converted once, reused by the others.
    out_root = Path(sys.argv[4]) if len(sys.argv) > 4 else results_path.parent / "parity_runs"
    gathered_lines = []
    world = dist.get_world_size()
    for arch, layout in CASES:
        needed = ranks_needed(layout)
        runs_here = world % needed == 0 and (needed > world // 2 or world <= 2)
        if (selected and arch not in selected) or not runs_here:
            continue
        local = run_case(arch, layout, fixtures, out_root)
        per_rank: list[dict] = [{} for _ in range(dist.get_world_size())]
        dist.all_gather_object(per_rank, local)
        gathered_lines.append(json.dumps({"case": f"{arch}-{layout}", "ranks": per_rank}))
    if (selected is None or {"llama", "qwen2"} <= selected) and world == 4:
        gathered_lines.append(json.dumps(stale_checkpoint_case(fixtures, out_root)))
    if dist.get_rank() == 0:
        results_path.write_text("\n".join(gathered_lines) + "\n")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
