#!/usr/bin/env bash
# Second GPU round, one device command on a 2-GPU machine (scripts/gpu/README.md):
#   packed-attention GPU tests -> the GPU recipe padded vs packed (flash varlen attention), both
#   in this run (ratio) -> a bf16 distributed-optimizer checkpoint at step 4 and a resume from it
#   -> rollout in a separate vLLM process on GPU 1 fed over NCCL -> summary.json.
# Writes into $OUT: env.log tests.log {padded,packed,resumed,nccl}.log/.jsonl summary.json
set -u
OUT=${OUT:-/tmp/gpu_features_out}
# shellcheck source=scripts/gpu/setup_env.sh
source scripts/gpu/setup_env.sh

stage "packed attention tests"
timeout 120 python3 -m pytest tests/gpu/test_packed_attention.py -q -p no:cacheprovider \
  >"$OUT/tests.log" 2>&1
echo "tests rc=$?" | tee -a "$OUT/env.log"

stage "build model"
MODEL=/tmp/qwen2_0p5b_body
[ -d $MODEL ] || python3 -m oumi_megatron.testing.tiny_models qwen2_0p5b_body $MODEL >>"$OUT/env.log" 2>&1

train() {  # name, seconds, overrides...
  local name=$1 limit=$2; shift 2
  stage "train $name"
  timeout "$limit" torchrun --standalone --nproc-per-node 1 -m oumi_megatron train \
    -c configs/recipes/qwen2_grpo_gpu.yaml model.model_name=$MODEL "$@" >"$OUT/$name.log" 2>&1
  echo "$name rc=$?" | tee -a "$OUT/env.log"
}
STEPS="training.max_steps=5 training.save_final_model=false"
train padded 150 training.output_dir=/tmp/run_padded $STEPS training.save_steps=0
cp /tmp/run_padded/metrics.jsonl "$OUT/padded.jsonl" 2>/dev/null
PACKED="megatron.enable_sequence_packing=true megatron.max_tokens_per_microbatch=4096"
train packed 150 training.output_dir=/tmp/run_packed $STEPS $PACKED training.save_steps=4
cp /tmp/run_packed/metrics.jsonl "$OUT/packed.jsonl" 2>/dev/null
cp -r /tmp/run_packed /tmp/run_resumed 2>/dev/null
train resumed 120 training.output_dir=/tmp/run_resumed $STEPS $PACKED training.save_steps=4 \
  training.resume_from_checkpoint=step_4
cp /tmp/run_resumed/metrics.jsonl "$OUT/resumed.jsonl" 2>/dev/null
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  train nccl 170 training.output_dir=/tmp/run_nccl training.max_steps=4 training.save_steps=0 \
    megatron.weight_sync_method=nccl megatron.vllm_gpu_memory_utilization=0.6
  cp /tmp/run_nccl/metrics.jsonl "$OUT/nccl.jsonl" 2>/dev/null
fi

stage "summary"
python3 - "$OUT" >>"$OUT/env.log" 2>&1 <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
keys = ("time/rollout", "time/update", "time/sync", "time/checkpoint", "time/step",
        "perf/tokens_per_second", "perf/mfu", "mismatch/token_mult_prob_error",
        "mismatch/max_abs_logprob_diff", "grad_norm", "reward/mean")
summary = {}
for name in ("padded", "packed", "resumed", "nccl"):
    p = out / f"{name}.jsonl"
    rows = [json.loads(l) for l in p.read_text().splitlines() if l.strip()] if p.exists() else []
    later = [r for r in rows if r["step"] >= 2] or rows
    summary[name] = {"steps": [r["step"] for r in rows],
                     "median_steps_2_on": {k: statistics.median(r[k] for r in later)
                                           for k in keys if later and all(k in r for r in later)},
                     "rows": [{k: r.get(k) for k in ("step",) + keys} for r in rows]}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps({k: v["median_steps_2_on"] for k, v in summary.items()}, indent=1))
PY
stage "done"
