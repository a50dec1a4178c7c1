"""vLLM alone on the batch the trainer generates: the baseline of the rollout phase (GPU).

Builds the recipe's engine as a plain vLLM `LLM` in this process (no trainer, no Megatron
model beside it), takes the prompts of step `--step` from the recipe's prompt loader, and times
`generate` with the trainer's sampling settings and per-prompt seeds. Compare with the trainer's
`time/rollout` of the same step in metrics.jsonl (the same samples: same model, seeds, prompts).

    python benchmarks/rollout_vs_vllm.py -c configs/recipes/grpo-qwen2.5-1.5b-1n1g-tp1.yaml \
        model.model_name=runs/qwen2.5_1.5b --reps 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--step", type=int, default=1, help="the trainer's step (0-based)")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    import torch

    from oumi_megatron.launch import prepare_run
    from oumi_megatron.rollout.base import SamplingParams
    from oumi_megatron.rollout.factory import build_engine
    from oumi_megatron.step.components import build_prompts, engine_spec
    from oumi_megatron.step.rollout import prompt_seeds

    setup = prepare_run(args.config, args.overrides, for_training=False)
    cfg, grpo = setup.cfg, setup.cfg.grpo
    _, loader = build_prompts(setup, setup.validated.prompts_per_step)
    for _ in range(args.step):
        next(loader)
    prompts = next(loader).prompts
    start = time.perf_counter()
    engine = build_engine(engine_spec(setup, "vllm", "cuda"))
    built = time.perf_counter() - start
    params = SamplingParams(n=grpo.num_generations, temperature=grpo.temperature,
                            top_p=grpo.top_p, top_k=grpo.top_k or -1,
                            max_new_tokens=grpo.max_completion_length)  # fmt: skip
    seeds = prompt_seeds(cfg.sampling_seed, args.step, list(range(len(prompts))))
    ids = [list(p.prompt_ids) for p in prompts]
    engine.generate(ids, params, prompt_seeds=seeds)  # warm-up
    times, tokens = [], 0
    for _ in range(args.reps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        samples = engine.generate(ids, params, prompt_seeds=seeds)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        tokens = sum(len(s.completion_ids) for s in samples)
    result = {
        "engine_start_s": built,
        "generate_s": times,
        "generate_median_s": statistics.median(times),
        "completions": len(samples),
        "completion_tokens": tokens,
        "tokens_per_s": tokens / statistics.median(times),
        "device": torch.cuda.get_device_name(0),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
