"""Everything Megatron-Core and Megatron-Bridge need to run without CUDA or Transformer Engine.

Megatron assumes a CUDA device in a handful of places (all fail with "Found no NVIDIA driver"):
the RNG state tracker, `torch.cuda.current_device()` for buffers and RoPE frequencies, and the
default causal mask. Megatron-Bridge imports Transformer Engine unconditionally in one module.
Each shim below is applied only when CUDA is absent (or TE is missing) and is idempotent.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.abc
import importlib.machinery
import sys
import types

import torch

_APPLIED = False
_TE_STANDIN_TARGET = "megatron.bridge.peft.lora_layers"


def cuda_available() -> bool:
    return torch.cuda.is_available()


def apply_cpu_compat() -> None:
    """Patch Megatron-Core for CPU execution; a no-op when CUDA is available."""
    global _APPLIED
    if _APPLIED or cuda_available():
        return
    from oumi_megatron import patches

    patches.check_all("cpu")  # every target as the stand-ins expect, before any is replaced
    # Buffers (GlobalMemoryBuffer), RoPE frequencies and batch helpers ask for the current CUDA
    # device; on a CPU-only machine the CPU is that device.
    torch.cuda.current_device = lambda: torch.device("cpu")  # type: ignore[assignment]
    # Checkpoint writers synchronise the device before copying tensors; CPU work is synchronous.
    torch.cuda.synchronize = lambda device=None: None  # type: ignore[assignment]
    # DDP's gradient sync orders itself after CUDA-graph events on the current stream.
    torch.cuda.current_stream = lambda device=None: _NULL_STREAM  # type: ignore[assignment]
    _install_cpu_rng_tracker()
    _install_cpu_causal_mask()
    _install_cpu_cp_rope()
    _install_cpu_factories()
    _install_cpu_grad_clipping()
    _install_cpu_distributed_optimizer()
    _install_cpu_tied_embeddings()
    _APPLIED = True


class _NullStream:
    """What DDP asks of the current stream, for synchronous CPU execution."""

    def wait_event(self, event) -> None:
        return None

    def wait_stream(self, stream) -> None:
        return None


_NULL_STREAM = _NullStream()


class CpuRNGStatesTracker:
    """Megatron's RNG tracker contract (add/fork/get_states/set_states) on the CPU generator.

    Tensor-parallel dropout needs one named stream per TP rank; the CPU generator gives the same
    semantics as the CUDA one Megatron would use.
    """

    def __init__(self, *args, **kwargs):
        self.reset()
        self.use_cudagraphable_rng = False
        self.is_inference_rng_tracker = False

    def is_initialized(self) -> bool:
        return self._is_initialized

    def reset(self) -> None:
        self._is_initialized = False
        self.states_: dict[str, torch.Tensor] = {}
        self.seeds_: set[int] = set()

    def get_states(self) -> dict[str, torch.Tensor]:
        return dict(self.states_)

    def set_states(self, states: dict[str, torch.Tensor]) -> None:
        self._is_initialized = True
        self.states_ = states

    def add(self, name: str, seed: int) -> None:
        self._is_initialized = True
        if seed in self.seeds_:
            raise ValueError(f"seed {seed} already exists")
        if name in self.states_:
            raise ValueError(f"rng state {name} already exists")
        self.seeds_.add(seed)
        self.states_[name] = torch.Generator().manual_seed(seed).get_state()

    @contextlib.contextmanager
    def fork(self, name: str = "model-parallel-rng"):
        if name not in self.states_:
            raise KeyError(f"rng state {name} is not added")
        outer_state = torch.get_rng_state()
        torch.set_rng_state(self.states_[name])
        try:
            yield
        finally:
            self.states_[name] = torch.get_rng_state()
            torch.set_rng_state(outer_state)


def _install_cpu_rng_tracker() -> None:
    from megatron.core.tensor_parallel import random as mp_random

    # Activation recompute saves and restores the "CUDA" state: on CPU that is the CPU generator.
    mp_random._get_cuda_rng_state = lambda *args, **kwargs: torch.get_rng_state()
    mp_random._set_cuda_rng_state = lambda state, *args, **kwargs: torch.set_rng_state(state)
    mp_random.CudaRNGStatesTracker = CpuRNGStatesTracker
    mp_random._CUDA_RNG_STATE_TRACKER = CpuRNGStatesTracker()
    mp_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = True


def cp_rank_pos_emb(pos_emb: torch.Tensor, seq_dim: int, cp_group) -> torch.Tensor:
    """Megatron's `get_pos_emb_on_this_cp_rank` without its pinned-memory `.cuda()` index:
    chunks ``r`` and ``2C - 1 - r`` of the ``2C`` chunks along ``seq_dim``."""
    size, rank = cp_group.size(), cp_group.rank()
    index = torch.tensor([rank, 2 * size - rank - 1], device=pos_emb.device)
    chunks = pos_emb.view(*pos_emb.shape[:seq_dim], 2 * size, -1, *pos_emb.shape[seq_dim + 1 :])
    mine = chunks.index_select(seq_dim, index)
    return mine.view(*mine.shape[:seq_dim], -1, *mine.shape[seq_dim + 2 :])


def _install_cpu_cp_rope() -> None:
    # Padded rows under context parallelism: RoPE frequencies of this rank's two chunks.
    from megatron.core.models.common.embeddings import rope_utils, rotary_pos_embedding

    rope_utils.get_pos_emb_on_this_cp_rank = cp_rank_pos_emb
    rotary_pos_embedding.get_pos_emb_on_this_cp_rank = cp_rank_pos_emb


def _install_cpu_causal_mask() -> None:
    from megatron.core.transformer import utils as transformer_utils

    def get_default_causal_mask(sq: int) -> torch.Tensor:
        return torch.triu(torch.ones(sq, sq, dtype=torch.bool), diagonal=1)

    transformer_utils.get_default_causal_mask = get_default_causal_mask
    attention_modules = ("megatron.core.transformer.dot_product_attention",)
    for module_name in attention_modules:
        module = sys.modules.get(module_name) or importlib.import_module(module_name)
        if hasattr(module, "get_default_causal_mask"):
            module.get_default_causal_mask = get_default_causal_mask


class _CpuDeviceTorch:
    """`torch` as seen by one Megatron module: factories asked for "cuda" build on the CPU.

    Every other attribute is the real `torch`, so the module behaves as before.
    """

    _FACTORIES = ("zeros", "ones", "empty", "tensor", "full", "arange")

    def __init__(self, real_torch):
        self._torch = real_torch

    def __getattr__(self, name: str):
        attr = getattr(self._torch, name)
        if name not in self._FACTORIES:
            return attr

        def on_cpu(*args, **kwargs):
            if str(kwargs.get("device", "")).startswith("cuda"):
                kwargs["device"] = "cpu"
            return attr(*args, **kwargs)

        return on_cpu


# Modules that create small bookkeeping tensors with device="cuda": the pipeline schedules'
# token counter, the optimizers' loss-scale / found-inf flags, gradient-norm buffers.
_CUDA_FACTORY_MODULES = (
    "megatron.core.pipeline_parallel.schedules",
    "megatron.core.optimizer.optimizer",
    "megatron.core.optimizer.clip_grads",
    "megatron.core.utils",
)


def _install_cpu_factories() -> None:
    for name in _CUDA_FACTORY_MODULES:
        module = importlib.import_module(name)
        if not isinstance(module.torch, _CpuDeviceTorch):
            module.torch = _CpuDeviceTorch(torch)


def _clip_grad_by_total_norm_fp32(parameters, max_norm, total_norm, use_decoupled_grad=False):
    """Megatron's `clip_grad_by_total_norm_fp32`, minus its `torch.cuda.FloatTensor` assertion."""
    attr = "decoupled_grad" if use_decoupled_grad else "grad"
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    grads = [getattr(p, attr).detach() for p in parameters if getattr(p, attr, None) is not None]
    clip_coeff = max_norm / (total_norm + 1.0e-6)
    if isinstance(clip_coeff, torch.Tensor):
        clip_coeff = clip_coeff.clamp_max(1.0)
    elif clip_coeff >= 1.0:
        return
    for grad in grads:
        grad.mul_(clip_coeff)


def _install_cpu_grad_clipping() -> None:
    from megatron.core.optimizer import clip_grads, optimizer

    clip_grads.clip_grad_by_total_norm_fp32 = _clip_grad_by_total_norm_fp32
    optimizer.clip_grad_by_total_norm_fp32 = _clip_grad_by_total_norm_fp32


def _cuda_type_name(tensor: torch.Tensor, dtype=None, non_blocking=False, **kwargs):
    """`Tensor.type()` as the CUDA build names it ("torch.cuda.FloatTensor"); casts unchanged."""
    if dtype is not None or kwargs:
        return _TENSOR_TYPE(tensor, dtype, non_blocking, **kwargs)
    name = _TENSOR_TYPE(tensor)
    return name.replace("torch.", "torch.cuda.", 1) if tensor.device.type == "cpu" else name


_TENSOR_TYPE = torch.Tensor.type


def _install_cpu_distributed_optimizer() -> None:
    """The distributed optimizer sorts parameters by `param.type()` and accepts only CUDA type
    names; while it is built, CPU parameters report their CUDA names (reduce-scatter and
    all-gather run on gloo)."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    init = DistributedOptimizer.__init__
    if getattr(init, "_oumi_cpu", False):
        return

    @functools.wraps(init)
    def cpu_init(self, *args, **kwargs):
        torch.Tensor.type = _cuda_type_name  # type: ignore[method-assign]
        try:
            init(self, *args, **kwargs)
        finally:
            torch.Tensor.type = _TENSOR_TYPE  # type: ignore[method-assign]

    cpu_init._oumi_cpu = True  # type: ignore[attr-defined]
    DistributedOptimizer.__init__ = cpu_init


class _PlaceholderModule(types.ModuleType):
    """Any attribute is a fresh empty class: annotations and isinstance checks see no match."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return (
            _PlaceholderModule(f"{self.__name__}.{name}") if name.islower() else type(name, (), {})
        )


class _TransformerEngineStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves an empty `transformer_engine.pytorch` only while Bridge's LoRA module imports.

    `megatron/bridge/peft/lora_layers.py` imports TE with no fallback; every other TE check in
    Megatron must keep seeing "not installed", so the stand-in is removed right after.
    """

    def find_spec(self, fullname, path, target=None):
        if fullname in ("transformer_engine", "transformer_engine.pytorch") and _target_importing():
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _PlaceholderModule(spec.name)
        module.__path__ = []  # type: ignore[attr-defined]
        return module

    def exec_module(self, module):
        return None


def _target_importing() -> bool:
    module = sys.modules.get(_TE_STANDIN_TARGET)
    return module is not None and getattr(module.__spec__, "_initializing", False)


def import_megatron_bridge():
    """Import `megatron.bridge` whether or not Transformer Engine is installed."""
    if "megatron.bridge" in sys.modules:
        return sys.modules["megatron.bridge"]
    if importlib.util.find_spec("transformer_engine") is not None:
        return importlib.import_module("megatron.bridge")
    finder = _TransformerEngineStandIn()
    sys.meta_path.insert(0, finder)
    try:
        importlib.import_module("megatron.bridge")
    finally:
        sys.meta_path.remove(finder)
        for name in ("transformer_engine.pytorch", "transformer_engine"):
            sys.modules.pop(name, None)
    return importlib.import_module("megatron.bridge")


def _install_cpu_tied_embeddings() -> None:
    """Tied embeddings over pipeline stages: Megatron copies the first stage's embedding to
    the last stage's output layer with an all-reduce of ``weight.data.cuda()``. The same
    all-reduce on the CPU tensor (the copy's other steps unchanged)."""
    import torch.distributed as dist
    from megatron.core.models.common.language_module.language_module import LanguageModule

    original = LanguageModule.setup_embeddings_and_output_layer

    @functools.wraps(original)
    def setup_embeddings_and_output_layer(self) -> None:
        config = self.config
        if config.init_model_with_meta_device or not dist.is_initialized():
            return original(self)
        config.init_model_with_meta_device = True  # skips only the CUDA all-reduce
        try:
            original(self)
        finally:
            config.init_model_with_meta_device = False
        tied = self.share_embeddings_and_output_weights or getattr(config, "mtp_num_layers", 0)
        if tied and config.pipeline_model_parallel_size > 1 and self._is_in_embd_group():
            dist.all_reduce(self.shared_embedding_or_output_weight().data, group=self.embd_group)

    LanguageModule.setup_embeddings_and_output_layer = setup_embeddings_and_output_layer
