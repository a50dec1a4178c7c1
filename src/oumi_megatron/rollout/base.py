"""Rollout engine interface: sampling parameters, samples, and the engine contract.

The rollout side knows nothing about Megatron: weights arrive as ``(hf_name, tensor)`` pairs
in Hugging Face naming (``model.state_dict()`` names of the ``*ForCausalLM`` model).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import torch

FinishReason = Literal["stop", "length"]

# Below this temperature sampling is greedy (vLLM's _SAMPLING_EPS).
GREEDY_TEMPERATURE = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    """How to sample completions (one set for the whole batch of prompts).

    - ``n``: completions per prompt (GRPO's ``num_generations``).
    - ``temperature``: 0 (below 1e-5) means greedy.
    - ``top_p`` in (0, 1]; 1 disables. ``top_k`` <= 0 disables.
    - ``max_new_tokens``: completion length cap (finish_reason ``"length"``).
    - ``stop_token_ids``: extra ids that end a completion; the model's own EOS ids
      (``generation_config.eos_token_id``) stop it too unless ``ignore_eos`` (as in vLLM).
    - ``seed``: makes sampling reproducible; None draws fresh randomness.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 128
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        # Accept lists from configs but keep the dataclass hashable.
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_TEMPERATURE


@dataclass
class RolloutSample:
    """One completion of one prompt.

    ``completion_logprobs[i]`` is the log-probability of ``completion_ids[i]`` under the
    *processed* distribution it was sampled from ("processed logprobs", the same quantity as
    vLLM's ``logprobs_mode="processed_logprobs"``)::

        z = logits.float() / temperature          # temperature first
        z = top_k_top_p_mask(z)                   # tokens outside top-k / top-p set to -inf
        logprobs = log_softmax(z)                 # renormalised over the kept tokens

    With top_k/top_p disabled this is exactly ``log_softmax(logits / T)[token]``, which the
    trainer recomputes teacher-forced. For greedy sampling (T == 0) no temperature is applied:
    ``log_softmax(logits)[token]``. The EOS token, when sampled, is part of the completion
    and has a logprob.
    """

    prompt_index: int
    prompt_ids: list[int]
    completion_ids: list[int]
    completion_logprobs: list[float]
    finish_reason: FinishReason
    sample_index: int = 0  # which of the n completions of this prompt


def seeds_for_prompts(
    params: SamplingParams, count: int, prompt_seeds: list[int] | None
) -> list[int | None]:
    """The seed of each of ``count`` prompts: given, derived from ``params.seed`` and the
    position, or None (fresh randomness) when neither is set."""
    if prompt_seeds is not None:
        if len(prompt_seeds) != count:
            raise ValueError(f"{len(prompt_seeds)} prompt seeds for {count} prompts")
        return [int(s) for s in prompt_seeds]
    if params.seed is None:
        return [None] * count
    return [derive_seed(params.seed, i) for i in range(count)]


def split_prompts(
    prompt_token_ids: list[list[int]],
    params: SamplingParams,
    prompt_seeds: list[int] | None,
    count: int,
) -> list[tuple[int, list[list[int]], list[int] | None]]:
    """``count`` contiguous chunks ``(first prompt index, prompts, their seeds)`` for engines
    that share one call (rollout processes, workers); each prompt keeps its own seed."""
    bounds = [len(prompt_token_ids) * i // count for i in range(count + 1)]
    seeds = seeds_for_prompts(params, len(prompt_token_ids), prompt_seeds)
    unseeded = params.seed is None and prompt_seeds is None
    return [
        (
            bounds[k],
            prompt_token_ids[bounds[k] : bounds[k + 1]],
            None if unseeded else seeds[bounds[k] : bounds[k + 1]],
        )  # fmt: skip
        for k in range(count)
    ]


def merge_chunks(starts: list[int], chunks: list[list[RolloutSample]]) -> list[RolloutSample]:
    """The samples of :func:`split_prompts`' chunks, indexed into the whole call again."""
    samples = []
    for start, chunk in zip(starts, chunks, strict=True):
        for sample in chunk:
            sample.prompt_index += start
            samples.append(sample)
    return samples


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed mixed from ``seed`` and ``keys`` (e.g. prompt and sample index).

    Hashing (rather than ``seed + index``) keeps streams of nearby seeds unrelated: step s,
    prompt 1 must not reuse the noise of step s+1, prompt 0.
    """
    text = ":".join(str(int(k)) for k in (seed, *keys)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


class RolloutEngine(ABC):
    """Generates completions and accepts new weights by Hugging Face parameter name."""

    @abstractmethod
    def generate(
        self,
        prompt_token_ids: list[list[int]],
        params: SamplingParams,
        prompt_seeds: list[int] | None = None,
    ) -> list[RolloutSample]:
        """``n`` samples per prompt, grouped: prompt 0's n samples, then prompt 1's, ....

        ``prompt_seeds[i]`` seeds prompt i's samples (a prompt's samples then do not depend on
        which other prompts share the call); None: seeds derived from ``params.seed`` and the
        position in this call.
        """

    def submit(
        self,
        prompt_token_ids: list[list[int]],
        params: SamplingParams,
        prompt_seeds: list[int] | None = None,
    ) -> Callable[[], list[RolloutSample]]:
        """Start :meth:`generate`; returns the function that waits for its samples. Engines in
        other processes generate while the caller goes on (one-step off-policy GRPO); this
        default generates here, now, with the current weights."""
        samples = self.generate(prompt_token_ids, params, prompt_seeds)
        return lambda: samples

    @abstractmethod
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load one bucket of ``(hf_name, tensor)``; called many times per sync.

        Tensors may be views into a transport buffer that is reused after this call returns:
        engines must copy them, never keep references.
        """

    def finish_weight_update(self) -> None:  # noqa: B027 - optional hook
        """Called once after the last bucket of a sync (e.g. to reset a prefix cache)."""

    def copy_targets(self) -> dict | None:
        """Where the tensors of a whole sync land, when every weight arrives by plain copies:
        ``{hf_name: [(destination view, size, stride, offset into the HF tensor), ...]}``
        (`rollout/copy_plan.py`). The same object while the destinations stay where they are;
        None when the engine cannot say (then weights arrive through `update_weights` only)."""
        return None

    def write_weights(self, copy: Callable[[], None]) -> None:
        """Run `copy`, which writes a whole sync into the views of :meth:`copy_targets`, with
        the engine's weights in place; then finish the update as after the last bucket."""
        raise NotImplementedError(f"{type(self).__name__} takes weights by update_weights only")

    def sleep(self) -> None:  # noqa: B027 - optional hook
        """Release accelerator memory while the trainer runs."""

    def wake_up(self) -> None:  # noqa: B027 - optional hook
        """Undo :meth:`sleep` before the next :meth:`generate`."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the engine (processes, accelerator memory) at the end of training."""
