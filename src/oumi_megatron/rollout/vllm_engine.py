"""vLLM rollout engine (GPU). ``vllm`` is imported lazily: this module imports without it.

Stable vLLM (0.26) API only: ``LLM(enable_sleep_mode=True, logprobs_mode="processed_logprobs")``,
``TokensPrompt``, ``SamplingParams(logprobs=0, detokenize=False)``, ``collective_rpc``,
``reset_prefix_cache``, ``sleep``/``wake_up``.

Weights are pushed with ``llm.collective_rpc(fn, args=(bucket,))``: ``fn(worker, bucket)`` runs
in the worker and calls the model's own ``load_weights`` (HF names; it handles fused qkv /
gate_up and tied embeddings) on the first sync, recording where each tensor lands; later syncs
replay those copies (`rollout/copy_plan.py`; ``OUMI_MEGATRON_COPY_PLAN=0`` turns it off). For
the tensors to reach the worker as the same GPU tensors
(not pickled), the engine core must run in this process: ``VLLM_ENABLE_V1_MULTIPROCESSING=0``
(set here before vLLM is imported). Inside torchrun, ``external_launcher=True`` makes one engine
per group of ``tensor_parallel_size`` consecutive ranks (vLLM's "external launcher" executor,
as TRL's colocate mode and verl use it); each rank's worker then lives in that rank's process.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from oumi_megatron.rollout.base import (
    RolloutEngine,
    RolloutSample,
    SamplingParams,
    seeds_for_prompts,
)
from oumi_megatron.rollout.copy_plan import CopyPlan
from oumi_megatron.rollout.hf_weights import WeightUpdateError

_MP_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"
logger = logging.getLogger(__name__)


def _import_vllm() -> Any:
    previous = os.environ.get(_MP_ENV)
    if previous not in (None, "0"):
        warnings.warn(
            f"{_MP_ENV}={previous} overridden to 0: in-process weight updates need it",
            stacklevel=3,
        )
    os.environ[_MP_ENV] = "0"
    try:
        import vllm
    except ImportError as err:
        raise ImportError(
            "VllmRolloutEngine needs vLLM (GPU only): install the 'gpu' extra, "
            "or use TorchRolloutEngine"
        ) from err
    return vllm


def vllm_sampling_kwargs(params: SamplingParams, seed: int | None) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for one prompt seeded with ``seed``.

    vLLM gives the n children of a request ``seed + j``. The seed is kept below 2**31 so that
    any int32 seed storage inside vLLM is safe.
    """
    seed = None if seed is None else seed % (2**31)
    return {
        "n": params.n,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k if params.top_k > 0 else 0,  # 0 disables in vLLM 0.26
        "max_tokens": params.max_new_tokens,
        "stop_token_ids": list(params.stop_token_ids),
        "ignore_eos": params.ignore_eos,
        "logprobs": 0,  # only the sampled token's logprob
        "seed": seed,
        "detokenize": False,
    }


def samples_from_outputs(
    outputs: Sequence[Any], prompt_token_ids: list[list[int]], n: int
) -> list[RolloutSample]:
    """Map vLLM ``RequestOutput``s (in prompt order) to grouped :class:`RolloutSample`s."""
    if len(outputs) != len(prompt_token_ids):
        raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(prompt_token_ids)}")
    samples = []
    for i, output in enumerate(outputs):
        completions = sorted(output.outputs, key=lambda c: c.index)
        if len(completions) != n:
            raise RuntimeError(f"prompt {i}: vLLM returned {len(completions)} of n={n} samples")
        for j, completion in enumerate(completions):
            ids = [int(t) for t in completion.token_ids]
            if completion.logprobs is None or len(completion.logprobs) != len(ids):
                raise RuntimeError(f"prompt {i} sample {j}: missing per-token logprobs")
            logprobs = [
                float(position[token].logprob)
                for token, position in zip(ids, completion.logprobs, strict=True)
            ]
            if completion.finish_reason not in ("stop", "length"):
                raise RuntimeError(f"prompt {i}: unexpected finish {completion.finish_reason!r}")
            samples.append(
                RolloutSample(
                    prompt_index=i,
                    prompt_ids=list(prompt_token_ids[i]),
                    completion_ids=ids,
                    completion_logprobs=logprobs,
                    finish_reason=completion.finish_reason,
                    sample_index=j,
                )
            )
    return samples


def _worker_model(worker: Any) -> Any:
    inner = getattr(worker, "worker", worker)
    runner = inner.model_runner
    # get_model() unwraps CUDA-graph wrappers; older runners only have .model.
    return runner.get_model() if hasattr(runner, "get_model") else runner.model


def _load_weights_in_worker(worker: Any, weights: list[tuple[str, torch.Tensor]]) -> int:
    """Runs inside the vLLM worker (``worker`` is its ``WorkerWrapperBase``): the model's own
    ``load_weights`` on the first sync (recorded), plain copies afterwards (`CopyPlan`)."""
    model = _worker_model(worker)
    plan = model.__dict__.setdefault("_oumi_copy_plan", CopyPlan())
    plan.load(model.load_weights, weights)
    return len(weights)


def _finish_weights_in_worker(worker: Any) -> bool:
    """End of a sync: after the first one, whether later ones replay plain copies."""
    model = _worker_model(worker)
    plan = model.__dict__.get("_oumi_copy_plan")
    if plan is None:
        return False
    plan.finish(model)
    return plan.ready


def _copy_targets_in_worker(worker: Any) -> dict | None:
    """The worker's recorded copies once they replace `load_weights` (see `CopyPlan`)."""
    plan = _worker_model(worker).__dict__.get("_oumi_copy_plan")
    return plan.entries if plan is not None and plan.ready else None


class VllmRolloutEngine(RolloutEngine):
    """vLLM ``LLM`` with processed logprobs, sleep mode and in-process weight updates.

    Args:
        model: HF checkpoint directory (architecture + tokenizer; weights are replaced by
            the trainer's at the first sync).
        sleep_level: 1 offloads weights to host memory on :meth:`sleep` (safe); 2 discards
            them (less host memory) and is only valid when every sleep is followed by a
            full weight sync before :meth:`generate`; 0 never sleeps (weights and KV cache stay).
        **llm_kwargs: passed to ``vllm.LLM`` (e.g. ``max_model_len``, ``enforce_eager``).
    """

    def __init__(
        self,
        model: str | Path,
        *,
        dtype: str = "bfloat16",
        gpu_memory_utilization: float = 0.5,
        seed: int = 0,
        enable_prefix_caching: bool = True,
        sleep_level: int = 1,
        trust_remote_code: bool = False,
        tensor_parallel_size: int = 1,
        external_launcher: bool = False,
        **llm_kwargs: Any,
    ) -> None:
        if sleep_level not in (0, 1, 2):
            raise ValueError(f"sleep_level must be 0, 1 or 2, got {sleep_level}")
        vllm = _import_vllm()
        self.sleep_level = sleep_level
        if external_launcher:
            # Inside the trainer's torchrun world: vLLM builds its groups from the default
            # process group, tensor-parallel over consecutive ranks; the ranks beyond one
            # engine's are further independent engines. Every rank must construct it together.
            llm_kwargs.update(distributed_executor_backend="external_launcher",
                              disable_custom_all_reduce=True)  # fmt: skip
        elif tensor_parallel_size != 1:
            raise ValueError("tensor_parallel_size > 1 needs external_launcher=True")
        self.llm = vllm.LLM(
            model=str(model),
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=seed,
            enable_prefix_caching=enable_prefix_caching,
            enable_sleep_mode=sleep_level > 0,
            logprobs_mode="processed_logprobs",
            tensor_parallel_size=tensor_parallel_size,
            trust_remote_code=trust_remote_code,
            **llm_kwargs,
        )
        self._asleep = False
        self._weights_awake = False
        self.copy_plan_ready = False
        self.syncs = 0

    def generate(
        self,
        prompt_token_ids: list[list[int]],
        params: SamplingParams,
        prompt_seeds: list[int] | None = None,
    ) -> list[RolloutSample]:
        if self._asleep:
            raise RuntimeError("VllmRolloutEngine.generate called while asleep: wake_up() first")
        from vllm import SamplingParams as VllmSamplingParams
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(ids)) for ids in prompt_token_ids]
        seeds = seeds_for_prompts(params, len(prompts), prompt_seeds)
        per_prompt = [VllmSamplingParams(**vllm_sampling_kwargs(params, seed)) for seed in seeds]
        outputs = self.llm.generate(prompts, per_prompt, use_tqdm=False)
        return samples_from_outputs(outputs, prompt_token_ids, params.n)

    def _wake_weights(self) -> None:
        if self._asleep and not self._weights_awake:
            # Bring back only the weights: the KV cache stays released until wake_up().
            self.llm.wake_up(tags=["weights"])
            self._weights_awake = True

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        self._wake_weights()
        weights = list(named_tensors)
        try:
            self.llm.collective_rpc(_load_weights_in_worker, args=(weights,))
        except Exception as err:
            names = [name for name, _ in weights[:3]]
            raise WeightUpdateError(f"vLLM could not load bucket {names}...: {err}") from err

    def finish_weight_update(self) -> None:
        ready = all(self.llm.collective_rpc(_finish_weights_in_worker))
        if ready != self.copy_plan_ready or self.syncs == 0:
            logger.info("vLLM weight sync: %s", "recorded copies replayed from the next sync on"
                        if ready else "load_weights (its copies could not be recorded)")  # fmt: skip
        self.copy_plan_ready = ready
        self.syncs += 1
        # Cached KV blocks were computed by the old weights.
        if not self._asleep and not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM refused to reset its prefix cache (requests running?)")

    def copy_targets(self) -> dict | None:
        """The in-process worker's recorded copies (one worker per process: the engine core
        runs here, and with the external launcher each rank holds its own worker)."""
        targets = self.llm.collective_rpc(_copy_targets_in_worker)
        return targets[0] if len(targets) == 1 else None

    def write_weights(self, copy: Callable[[], None]) -> None:
        self._wake_weights()  # same addresses as before the sleep (vLLM's CuMemAllocator)
        copy()
        self.finish_weight_update()

    def sleep(self) -> None:
        if not self._asleep and self.sleep_level > 0:
            self.llm.sleep(level=self.sleep_level)
            self._asleep, self._weights_awake = True, False

    def wake_up(self) -> None:
        if self._asleep:
            # vLLM's CuMemAllocator does not track which tags are awake: waking a tag twice
            # maps its memory again and fails ("CUDA Error: invalid argument", vLLM 0.26). After
            # a sync while asleep the weights are already back, so wake the KV cache only.
            self.llm.wake_up(tags=["kv_cache"] if self._weights_awake else None)
            self._asleep, self._weights_awake = False, False
            # The KV cache is fresh memory; no stale prefix blocks survive a sleep, but the
            # reset is cheap and covers a sync that finished while asleep.
            self.llm.reset_prefix_cache()

    def shutdown(self) -> None:
        """Stop the in-process engine core and free its GPU memory and process groups."""
        llm, self.llm = self.llm, None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()
        del llm
        try:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory
        except ImportError:  # pragma: no cover - layout of other vLLM versions
            return
        cleanup_dist_env_and_memory()
