"""Every place this project replaces something inside Megatron-Core, Megatron-Bridge, torch or
Oumi, in one list, each checked against the installed version when it is applied.

A patch stands in for code whose internals may change between releases. Before one is applied,
its target must exist and, for a function, take the parameters the stand-in was written for;
otherwise the run stops with a message naming the patch and the installed version, instead of
failing (or silently misbehaving) later. ``scope="cpu"`` patches are applied only without CUDA
(`parallel.cpu_compat.apply_cpu_compat` returns early on a GPU machine) and their tests are
marked ``cpu_only`` (skipped where CUDA is present).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Patch:
    name: str
    target: str  # "module:attribute[.attribute]"
    scope: Literal["cpu", "all"]
    where: str  # the module of this project that applies it
    why: str
    params: tuple[str, ...] | None = None  # a function's expected parameters; None: exists


_RNG = "megatron.core.tensor_parallel.random"
_ROPE = "megatron.core.models.common.embeddings.rope_utils"
PATCHES: tuple[Patch, ...] = (
    Patch("cuda-current-device", "torch.cuda:current_device", "cpu", "parallel.cpu_compat",
          "buffers, RoPE and batch helpers ask for the current CUDA device"),
    Patch("cuda-synchronize", "torch.cuda:synchronize", "cpu", "parallel.cpu_compat",
          "checkpoint writers synchronise the device", ("device",)),
    Patch("cuda-current-stream", "torch.cuda:current_stream", "cpu", "parallel.cpu_compat",
          "DDP orders its gradient sync after CUDA-graph events", ("device",)),
    Patch("rng-get-state", f"{_RNG}:_get_cuda_rng_state", "cpu", "parallel.cpu_compat",
          "activation recompute saves the RNG state", ("device", "clone", "graph_safe")),
    Patch("rng-set-state", f"{_RNG}:_set_cuda_rng_state", "cpu", "parallel.cpu_compat",
          "activation recompute restores the RNG state", ("new_state", "device", "graph_safe")),
    Patch("rng-tracker", f"{_RNG}:CudaRNGStatesTracker", "cpu", "parallel.cpu_compat",
          "tensor-parallel RNG streams on the CPU generator"),
    Patch("causal-mask", "megatron.core.transformer.utils:get_default_causal_mask", "cpu",
          "parallel.cpu_compat", "the default causal mask is built on CUDA", ("sq",)),
    Patch("cp-rope-chunks", f"{_ROPE}:get_pos_emb_on_this_cp_rank", "cpu", "parallel.cpu_compat",
          "its chunk index uses pinned memory and .cuda()", ("pos_emb", "seq_dim", "cp_group")),
    Patch("cuda-factories", "megatron.core.pipeline_parallel.schedules:torch", "cpu",
          "parallel.cpu_compat", "bookkeeping tensors created with device='cuda' (also in the "
          "optimizer, clip_grads and utils modules)"),
    Patch("grad-clipping", "megatron.core.optimizer.clip_grads:clip_grad_by_total_norm_fp32",
          "cpu", "parallel.cpu_compat", "asserts torch.cuda.FloatTensor gradients",
          ("parameters", "max_norm", "total_norm", "use_decoupled_grad")),
    Patch("distributed-optimizer-types",
          "megatron.core.optimizer.distrib_optimizer:DistributedOptimizer.__init__", "cpu",
          "parallel.cpu_compat", "accepts only CUDA parameter type names",
          ("self", "optimizer", "config", "grad_scaler", "init_state_fn", "model_chunks",
           "per_model_buffers", "data_parallel_group", "data_parallel_group_gloo",
           "data_parallel_group_idx", "distributed_optimizer_instance_id")),
    Patch("tied-embeddings",
          "megatron.core.models.common.language_module.language_module:"
          "LanguageModule.setup_embeddings_and_output_layer", "cpu", "parallel.cpu_compat",
          "tied embeddings over pipeline stages are copied with an all-reduce of .cuda()",
          ("self",)),
    # No target to check ahead: finding Bridge's LoRA module imports Bridge, which needs the
    # stand-in; a Bridge without that import simply never asks for it.
    Patch("te-stand-in", "", "all", "parallel.cpu_compat",
          "Bridge's LoRA module imports Transformer Engine unconditionally (served only while "
          "it imports, and only when TE is not installed)"),
    Patch("packed-rope", f"{_ROPE}:_apply_rotary_pos_emb_thd", "all", "model.rope",
          "Megatron's unfused THD RoPE loops over sequences; ours is one pass (and knows the "
          "context-parallel layout)",
          ("t", "cu_seqlens", "freqs", "rotary_interleaved", "mla_rotary_interleaved", "mscale",
           "cp_group", "multi_latent_attention")),
    Patch("rope-cos-sin", f"{_ROPE}:_apply_rotary_pos_emb_bshd", "all", "model.rope",
          "Megatron takes cos and sin of the angles in every layer; given once per micro-batch "
          "(`per_token_frequencies`), the rotation only reads them",
          ("t", "freqs", "rotary_interleaved", "mla_rotary_interleaved", "mscale",
           "multi_latent_attention")),
    Patch("swiglu-backward", "megatron.core.fusions.fused_bias_swiglu:swiglu_back", "all",
          "model.swiglu_backward", "compiled, its concatenation of the two halves' gradients "
          "evaluates both halves' expressions for every element (GPU: one Triton pass instead)",
          ("g", "y")),
    Patch("quiet-row-linear-group",
          "megatron.core.tensor_parallel.layers:get_tensor_model_parallel_group_if_none", "all",
          "model.compile", "RowParallelLinear passes no group and Megatron warns on every "
          "forward, which splits every compiled layer's graph (only while compiling)",
          ("tp_group", "is_expert", "check_initialized")),
    Patch("multi-tensor-l2norm", "megatron.core.optimizer.clip_grads:l2_norm_impl", "all",
          "training.multi_tensor", "without TE/Apex the gradient norm syncs the device once "
          "per parameter", ("chunk_size", "noop_flag", "tensor_lists", "per_tensor", "args")),
    Patch("multi-tensor-scale-clip", "megatron.core.optimizer.clip_grads:multi_tensor_scale_impl",
          "all", "training.multi_tensor", "without TE/Apex gradient clipping scales one "
          "parameter at a time", ("chunk_size", "noop_flag", "tensor_lists", "scale")),
    Patch("multi-tensor-scale-optimizer",
          "megatron.core.optimizer.optimizer:multi_tensor_scale_impl", "all",
          "training.multi_tensor", "without TE/Apex main/model parameter copies go one "
          "parameter at a time", ("chunk_size", "noop_flag", "tensor_lists", "scale")),
    Patch("forked-writer-queue",
          "megatron.core.dist_checkpointing.strategies.filesystem_async:_results_queue", "all",
          "model.dist_ckpt", "the async writer's manager is spawned (re-imports the launcher)"),
    Patch("trusted-loading", "torch.distributed.checkpoint.filesystem:pickle", "all",
          "model.safe_load", "checkpoint metadata is unpickled unrestricted (only while a "
          "checkpoint loads)"),
    Patch("oumi-trainer-type", "oumi.core.configs.params.training_params:TrainerType", "all",
          "registration", "Oumi's trainer-type enum is closed: MEGATRON_GRPO is added"),
)  # fmt: skip


class PatchMismatch(RuntimeError):
    """An installed library no longer has what a patch replaces."""


def resolve(target: str):
    """The object `target` names ("module:attr.attr")."""
    module_name, _, attribute = target.partition(":")
    obj = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


_ORIGINALS: dict[str, object] = {}


def remember(name: str) -> object:
    """The target of patch `name` before this project replaced it (recorded at first call)."""
    patch = by_name(name)
    if name not in _ORIGINALS:
        _ORIGINALS[name] = resolve(patch.target)
    return _ORIGINALS[name]


def by_name(name: str) -> Patch:
    for patch in PATCHES:
        if patch.name == name:
            return patch
    raise KeyError(f"no patch named {name!r}")


def check(name: str) -> None:
    """Raise `PatchMismatch` unless patch `name`'s target exists as expected."""
    patch = by_name(name)
    if not patch.target:
        return
    try:
        target = remember(name)
    except (ImportError, AttributeError) as err:
        raise PatchMismatch(_message(patch, f"{patch.target} is missing ({err})")) from err
    if patch.params is None:
        return
    found = tuple(inspect.signature(target).parameters)
    if found != patch.params:
        raise PatchMismatch(
            _message(patch, f"{patch.target} takes {found}, the stand-in expects {patch.params}")
        )


def check_all(scope: str) -> None:
    """Check every patch of `scope` ("cpu" or "all")."""
    for patch in PATCHES:
        if patch.scope == scope:
            check(patch.name)


def _message(patch: Patch, problem: str) -> str:
    return (
        f"patch {patch.name!r} ({patch.why}; applied in oumi_megatron.{patch.where}) does not "
        f"fit the installed libraries: {problem}. Installed: {_versions()}. Fix: install the "
        f"versions in uv.lock, or update the patch for this version."
    )


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in ("megatron-core", "megatron-bridge", "torch", "oumi"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            continue
    return ", ".join(found)
