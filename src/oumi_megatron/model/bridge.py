"""HF ⇄ Megatron through Megatron-Bridge: convert once to a distributed checkpoint, reuse it,
export back to a Hugging Face directory.

`output_dir/megatron_checkpoint/` holds a Megatron-Core distributed checkpoint (global tensor
shapes, so it loads into any TP/PP/VPP/EP layout) plus `manifest.json` naming the HF source it
was converted from. A later run whose source and shapes match loads it instead of converting.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from oumi_megatron.console import quiet_stdout
from oumi_megatron.model.dist_ckpt import load_chunks, save_chunks, sharded_state_dict
from oumi_megatron.model.fingerprint import hf_fingerprint
from oumi_megatron.model.provider import build_model, configure_provider
from oumi_megatron.parallel.cpu_compat import import_megatron_bridge
from oumi_megatron.parallel.layout import ParallelLayout
from oumi_megatron.parallel.ranks import barrier, rank

logger = logging.getLogger(__name__)
MANIFEST = "manifest.json"
WEIGHTS_SUBDIR = "weights"


@dataclass
class LoadedModel:
    """A Megatron model (one chunk per virtual pipeline stage) and the bridge that maps it to HF."""

    bridge: object
    provider: object
    chunks: list[torch.nn.Module]
    hf_dir: Path
    reused_checkpoint: bool
    weights_seconds: float  # converting (HF read + save) or loading the converted checkpoint
    seconds: float


def resolve_hf_dir(model_name: str, trust_remote_code: bool = False) -> Path:
    """A local directory for `model_name`: the path itself, or the hub snapshot in the HF cache."""
    path = Path(model_name).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.is_absolute() or model_name.startswith((".", "~")):
        raise FileNotFoundError(
            f"model.model_name ({model_name!r}) does not exist: give a local HF checkpoint "
            "directory or a hub id such as 'Qwen/Qwen2.5-0.5B'"
        )
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
    if trust_remote_code:
        patterns.append("*.py")
    return Path(snapshot_download(model_name, allow_patterns=patterns))


def load_megatron_model(
    model_name: str,
    checkpoint_dir: str | Path,
    layout: ParallelLayout,
    params_dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    configure=None,
    ddp_config=None,
) -> LoadedModel:
    """Build the Megatron model for `layout` with weights from `checkpoint_dir`, converting from
    the HF checkpoint first when the directory is missing or stale. Collective: call on all ranks.

    `configure(provider)` may adjust the provider (recompute, MoE settings) before the model is
    built; with `ddp_config` the chunks are wrapped in Megatron's DDP for training.
    """
    start = time.perf_counter()
    import_megatron_bridge()
    from megatron.bridge import AutoBridge

    from oumi_megatron.model.bridges import register_bridges
    from oumi_megatron.model.rope import per_token_frequencies

    register_bridges()

    hf_dir = resolve_hf_dir(model_name, trust_remote_code)
    # No dtype here: Bridge forwards these kwargs to the tokenizer too, and the provider below
    # sets the parameter dtype anyway.
    bridge = AutoBridge.from_hf_pretrained(str(hf_dir), trust_remote_code=trust_remote_code)
    provider = configure_provider(
        bridge.to_megatron_provider(load_weights=False), layout, params_dtype,
        hf_config=bridge.hf_pretrained.config,
    )  # fmt: skip
    if configure is not None:
        configure(provider)
    with quiet_stdout():  # Megatron prints each rank's parameter count
        chunks = build_model(provider, wrap_with_ddp=ddp_config is not None, ddp_config=ddp_config)
    per_token_frequencies(chunks)
    checkpoint_dir = Path(checkpoint_dir)
    weights_start = time.perf_counter()
    manifest = _expected_manifest(hf_dir, chunks, params_dtype)
    reused = _all_ranks_agree(_manifest_matches(checkpoint_dir, manifest))
    if reused:
        load_chunks(chunks, checkpoint_dir / WEIGHTS_SUBDIR)
        logger.info("reused Megatron checkpoint %s (source unchanged)", checkpoint_dir)
    else:
        if checkpoint_dir.exists():
            logger.warning(
                "re-converting: %s was converted from a different source or shapes", checkpoint_dir
            )
        bridge.load_hf_weights(chunks)
        _save_converted(chunks, checkpoint_dir, manifest)
        logger.info("converted %s → %s", hf_dir, checkpoint_dir)
    weights_seconds = time.perf_counter() - weights_start
    return LoadedModel(
        bridge, provider, chunks, hf_dir, reused, weights_seconds, time.perf_counter() - start
    )


def export_hf_model(loaded: LoadedModel, output_dir: str | Path) -> Path:
    """Write safetensors weights, config, tokenizer and generation config to `output_dir`.

    Bridge streams tensors one at a time into safetensors shards, so host memory stays near one
    shard. Written under a temporary name and renamed when complete. Collective.
    """
    output_dir = Path(output_dir)
    tmp_dir = output_dir.with_name(output_dir.name + ".tmp")
    if rank() == 0:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    barrier()
    # quiet_stdout: Bridge prints "Success: All tensors ... were written."
    with _modelopt_quantization_stand_in(), quiet_stdout():
        loaded.bridge.save_hf_pretrained(loaded.chunks, tmp_dir, show_progress=False)
    if rank() == 0:
        generation_config = loaded.hf_dir / "generation_config.json"
        if generation_config.exists() and not (tmp_dir / "generation_config.json").exists():
            shutil.copy2(generation_config, tmp_dir / "generation_config.json")
        shutil.rmtree(output_dir, ignore_errors=True)
        os.replace(tmp_dir, output_dir)
    barrier()
    return output_dir


@contextlib.contextmanager
def _modelopt_quantization_stand_in():
    """Let Bridge's HF writer run without NVIDIA ModelOpt (an extra: `oumi-megatron[modelopt]`).

    `save_hf_weights` imports `modelopt.torch.quantization.utils.is_quantized` only to ask
    whether ModelOpt quantized the model. Without ModelOpt nothing can have been, so the answer
    is False: a module with that one function is served to the call, and removed afterwards so
    that every other ModelOpt check still sees "not installed". With ModelOpt installed, the
    real function is used.
    """
    if importlib.util.find_spec("modelopt") is not None:
        yield
        return
    names = ("modelopt", "modelopt.torch", "modelopt.torch.quantization",
             "modelopt.torch.quantization.utils")  # fmt: skip
    modules = {name: types.ModuleType(name) for name in names}
    for parent, child in zip(names[:-1], names[1:], strict=True):
        setattr(modules[parent], child.rsplit(".", 1)[1], modules[child])
    modules[names[-1]].is_quantized = lambda model: False
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name in names:
            if sys.modules.get(name) is modules[name]:
                del sys.modules[name]


def _expected_manifest(hf_dir: Path, chunks, params_dtype: torch.dtype) -> dict:
    """What a current checkpoint's manifest says; `shapes` holds this rank's tensors only."""
    shapes = {
        name: list(sharded.global_shape)
        for name, sharded in _sharded_tensors(chunks).items()
        if hasattr(sharded, "global_shape")
    }
    return {
        "source": str(hf_dir),
        "source_fingerprint": hf_fingerprint(hf_dir),
        "dtype": str(params_dtype),
        "shapes": shapes,
    }


def _manifest_matches(checkpoint_dir: Path, expected: dict) -> bool:
    """Same source and dtype, and every tensor this rank holds has the stored global shape."""
    manifest_path = checkpoint_dir / MANIFEST
    if not manifest_path.exists():
        return False
    found = json.loads(manifest_path.read_text())
    stored_shapes = found.get("shapes", {})
    return (
        found.get("source_fingerprint") == expected["source_fingerprint"]
        and found.get("dtype") == expected["dtype"]
        and all(stored_shapes.get(k) == v for k, v in expected["shapes"].items())
    )


def _all_ranks_agree(local: bool) -> bool:
    """Reuse only if every rank can: a split decision would deadlock the collective save/load."""
    if not dist.is_initialized():
        return local
    flag = torch.tensor([1 if local else 0], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _gather_shapes(local_shapes: dict) -> dict:
    """Union of every rank's tensor shapes (pipeline stages hold different tensors)."""
    if not dist.is_initialized():
        return dict(local_shapes)
    gathered: list[dict] = [{} for _ in range(dist.get_world_size())]
    dist.all_gather_object(gathered, local_shapes)
    merged: dict = {}
    for shapes in gathered:
        merged.update(shapes)
    return dict(sorted(merged.items()))


def _sharded_tensors(chunks) -> dict:
    from megatron.core.dist_checkpointing.dict_utils import nested_values

    return {sh.key: sh for sh in nested_values(sharded_state_dict(chunks)) if hasattr(sh, "key")}


def _save_converted(chunks, checkpoint_dir: Path, manifest: dict) -> None:
    tmp_dir = checkpoint_dir.with_name(checkpoint_dir.name + ".tmp")
    if rank() == 0:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        (tmp_dir / WEIGHTS_SUBDIR).mkdir(parents=True)
    barrier()
    save_chunks(chunks, tmp_dir / WEIGHTS_SUBDIR)
    manifest = {**manifest, "shapes": _gather_shapes(manifest["shapes"])}
    if rank() == 0:
        (tmp_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        os.replace(tmp_dir, checkpoint_dir)
    barrier()
