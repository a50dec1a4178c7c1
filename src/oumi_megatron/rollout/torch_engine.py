"""Rollout engine on plain transformers: explicit KV-cache decoding loop, exact logprobs.

Runs anywhere torch runs (the CPU tests, a GPU without vLLM). Prompts are left-padded and
decoded together; attention mask and position ids are built for left padding so that every
row computes what an unpadded forward of that row alone would.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from oumi_megatron.rollout.base import (
    RolloutEngine,
    RolloutSample,
    SamplingParams,
    derive_seed,
    seeds_for_prompts,
)
from oumi_megatron.rollout.copy_plan import CopyPlan
from oumi_megatron.rollout.hf_weights import copy_named_tensors, named_targets
from oumi_megatron.rollout.sampling import processed_logprobs, sample_next


def _eos_ids(model: torch.nn.Module) -> set[int]:
    """The model's EOS ids: generation_config first (it may list several), else config."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        eos = getattr(source, "eos_token_id", None) if source is not None else None
        if eos is not None:
            ids.update([eos] if isinstance(eos, int) else eos)
            break
    return ids


class TorchRolloutEngine(RolloutEngine):
    """``AutoModelForCausalLM`` sampler.

    Args:
        model: HF checkpoint directory (safetensors) or an already built model (moved to
            ``device``/``dtype`` in place).
        device: where to run; sleep/wake move the model off/onto it when it is not the CPU.
        dtype: parameter dtype; fp32 gives logprobs equal to a full forward to ~1e-6.
        max_batch_size: rows (prompt x sample) decoded together; None = all at once.
    """

    def __init__(
        self,
        model: str | Path | torch.nn.Module,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        *,
        trust_remote_code: bool = False,
        attn_implementation: str = "sdpa",
        max_batch_size: int | None = None,
    ) -> None:
        self.device = torch.device(device)
        if isinstance(model, (str, Path)):
            from transformers import AutoModelForCausalLM

            from oumi_megatron.rollout.hf_attention import hf_config_and_attention

            config, attention = hf_config_and_attention(
                model, attn_implementation, trust_remote_code
            )
            model = AutoModelForCausalLM.from_pretrained(
                str(model),
                config=config,
                dtype=dtype,
                trust_remote_code=trust_remote_code,
                use_safetensors=True,
                attn_implementation=attention,
            )
        self.model = model.to(device=self.device, dtype=dtype).eval().requires_grad_(False)
        self.eos_token_ids = _eos_ids(self.model)
        pad = getattr(self.model.config, "pad_token_id", None)
        self.pad_token_id = int(pad if pad is not None else min(self.eos_token_ids, default=0))
        self.max_batch_size = max_batch_size
        self.weight_version = 0
        self._asleep = False
        self._targets: dict[str, torch.Tensor] | None = None
        self._plan = CopyPlan()

    # -- generation ---------------------------------------------------------------------

    def generate(
        self,
        prompt_token_ids: list[list[int]],
        params: SamplingParams,
        prompt_seeds: list[int] | None = None,
    ) -> list[RolloutSample]:
        if self._asleep:
            raise RuntimeError("TorchRolloutEngine.generate called while asleep: wake_up() first")
        if any(len(ids) == 0 for ids in prompt_token_ids):
            raise ValueError("every prompt needs at least one token")
        seeds = [
            secrets.randbits(63) if seed is None else seed
            for seed in seeds_for_prompts(params, len(prompt_token_ids), prompt_seeds)
        ]
        rows = [(i, j) for i in range(len(prompt_token_ids)) for j in range(params.n)]
        chunk = self.max_batch_size or max(len(rows), 1)
        samples: list[RolloutSample] = []
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            generators = [self._generator(derive_seed(seeds[i], j)) for i, j in part]
            prompts = [prompt_token_ids[i] for i, _ in part]
            for (i, j), (ids, logprobs, reason) in zip(
                part, self._decode(prompts, params, generators), strict=True
            ):
                samples.append(
                    RolloutSample(
                        prompt_index=i,
                        prompt_ids=list(prompt_token_ids[i]),
                        completion_ids=ids,
                        completion_logprobs=logprobs,
                        finish_reason=reason,
                        sample_index=j,
                    )
                )
        return samples

    def _generator(self, seed: int) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed)
        return generator

    def _left_pad(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
        return input_ids.to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def _decode(
        self, prompts: list[list[int]], params: SamplingParams, generators: list[torch.Generator]
    ) -> list[tuple[list[int], list[float], str]]:
        """Prefill once, then one forward per new token through the KV cache."""
        input_ids, mask = self._left_pad(prompts)
        # Real tokens count from 0 whatever the padding; pads get 0 (they are masked anyway).
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        stop_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else self.eos_token_ids)
        stop = torch.tensor(sorted(stop_ids), dtype=torch.long, device=self.device)
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        rows = len(prompts)
        next_position = positions[:, -1] + 1
        finished = torch.zeros(rows, dtype=torch.bool, device=self.device)
        stopped = torch.zeros_like(finished)
        lengths = torch.zeros(rows, dtype=torch.long, device=self.device)
        tokens, token_logprobs = [], []
        for step in range(params.max_new_tokens):
            logprobs = processed_logprobs(out.logits[:, -1], params)
            token = sample_next(logprobs, params, generators)
            tokens.append(token)
            token_logprobs.append(logprobs.gather(-1, token[:, None])[:, 0])
            active = ~finished
            lengths += active.long()
            # Stop is checked before length (as vLLM does): EOS as the last allowed token
            # still finishes with "stop".
            hit = active & torch.isin(token, stop)
            stopped |= hit
            finished |= hit
            if bool(finished.all()) or step == params.max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            out = self.model(
                input_ids=token[:, None],
                attention_mask=mask,
                position_ids=next_position[:, None],
                past_key_values=out.past_key_values,
                use_cache=True,
            )
            next_position = next_position + 1
        all_tokens = torch.stack(tokens, dim=1).cpu()
        all_logprobs = torch.stack(token_logprobs, dim=1).cpu()
        results = []
        for row in range(rows):
            n = int(lengths[row])
            reason = "stop" if bool(stopped[row]) else "length"
            results.append((all_tokens[row, :n].tolist(), all_logprobs[row, :n].tolist(), reason))
        return results

    # -- weights ------------------------------------------------------------------------

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy by HF ``state_dict()`` name; tied embeddings accept either name. The copies
        of the first sync are recorded (`CopyPlan`) and replayed afterwards."""
        if self._targets is None:
            self._targets = named_targets(self.model)
        targets = self._targets
        self._plan.load(lambda weights: copy_named_tensors(targets, weights), list(named_tensors))

    def finish_weight_update(self) -> None:
        # No prefix cache to invalidate: each generate() starts from an empty KV cache.
        self._plan.finish(self.model)
        self.weight_version += 1

    def copy_targets(self) -> dict | None:
        return self._plan.entries if self._plan.ready else None

    def write_weights(self, copy: Callable[[], None]) -> None:
        copy()
        self.finish_weight_update()

    # -- memory -------------------------------------------------------------------------

    def sleep(self) -> None:
        """Move the model to host memory (a no-op when running on the CPU)."""
        if not self._asleep and self.device.type != "cpu":
            self.model.to("cpu")
            self._targets = None  # module.to() replaces the tensors: copies recorded so far
            self._plan = CopyPlan()  # point at the old ones
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        self._asleep = True

    def wake_up(self) -> None:
        """Move the model back to ``device`` (weights updated while asleep are kept)."""
        if self._asleep and self.device.type != "cpu":
            self.model.to(self.device)
            self._targets, self._plan = None, CopyPlan()
        self._asleep = False
