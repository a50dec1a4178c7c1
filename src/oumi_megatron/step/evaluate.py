"""Evaluation on held-out prompts (``data.validation``) every ``training.eval_steps`` steps.

One greedy completion per prompt (temperature 0, so the figure does not move with sampling
noise), by the same rollout replicas that generate for training, right after the weight sync:
each replica takes a contiguous share of the validation prompts, scores it with the training
reward functions, and one all-reduce of sums gives the metrics, logged with the training ones:

- ``eval/reward/mean``: mean weighted reward (``grpo.reward_weights``);
- ``eval/reward/<name>/mean``: mean of each reward function;
- ``eval/accuracy``: fraction of prompts whose ``grpo.accuracy_reward`` (else the first reward)
  gives full marks, as ``reward/accuracy`` in training;
- ``eval/response_length/mean``, ``eval/response_length/truncated_frac``, ``eval/prompts``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from oumi_megatron.parallel.ranks import all_reduce_host
from oumi_megatron.rewards import score_rollouts
from oumi_megatron.rewards.scoring import metric_name
from oumi_megatron.rollout.base import SamplingParams
from oumi_megatron.step.metrics import FULL_MARKS
from oumi_megatron.step.rollout import RolloutBatch, generate_share

EVAL_SEED_STEP = -1  # prompt seeds of evaluation: unused when greedy, kept apart from training's


def replica_share(num_prompts: int, num_replicas: int, replica: int) -> list[int]:
    """Contiguous, near-equal share of prompt indices for ``replica``."""
    base, extra = divmod(num_prompts, num_replicas)
    start = replica * base + min(replica, extra)
    return list(range(start, start + base + (replica < extra)))


@dataclass
class Evaluator:
    prompts: list  # PromptExample
    tokenizer: object
    reward_functions: list
    weights: list[float] | None
    accuracy_name: str
    max_new_tokens: int
    every: int

    def is_due(self, step: int, max_steps: int) -> bool:
        return step % self.every == 0 or step == max_steps

    def run(self, engine, topology, rank: int, generates: bool, is_leader: bool) -> dict:
        """Metrics of one evaluation (collective: every rank calls it)."""
        params = SamplingParams(n=1, temperature=0.0, max_new_tokens=self.max_new_tokens, seed=0)
        batch = RolloutBatch()
        if generates:
            replica = topology.replica_of(rank)
            share = replica_share(len(self.prompts), topology.num_replicas, replica)
            batch = generate_share(engine, self.tokenizer, self.prompts, share, params,
                                   EVAL_SEED_STEP)  # fmt: skip
        return self._reduce(batch if is_leader else RolloutBatch())

    def _reduce(self, batch: RolloutBatch) -> dict:
        names = [f.name for f in self.reward_functions]
        sums = torch.zeros(5 + len(names), dtype=torch.float64)
        if len(batch):
            result = score_rollouts(self.reward_functions, batch.completions_text,
                                    sample_ids=batch.sample_ids, prompts=batch.prompts_text,
                                    columns=batch.columns, weights=self.weights)  # fmt: skip
            accuracy = result.per_function.get(self.accuracy_name, [])
            sums[:5] = torch.tensor([
                len(batch), sum(result.total), sum(v >= FULL_MARKS for v in accuracy),
                batch.num_completion_tokens, sum(f == "length" for f in batch.finish_reasons),
            ], dtype=torch.float64)  # fmt: skip
            for i, name in enumerate(names):
                sums[5 + i] = sum(result.per_function.get(name, []))
        all_reduce_host(sums)
        n = max(sums[0].item(), 1.0)
        metrics = {
            "eval/prompts": sums[0].item(),
            "eval/reward/mean": sums[1].item() / n,
            "eval/accuracy": sums[2].item() / n,
            "eval/response_length/mean": sums[3].item() / n,
            "eval/response_length/truncated_frac": sums[4].item() / n,
        }
        for i, name in enumerate(names):
            metrics[f"eval/reward/{metric_name(name)}/mean"] = sums[5 + i].item() / n
        return metrics
