#!/usr/bin/env bash
# GPU feature checks on a 2-GPU machine (scripts/gpu/README.md), in two device commands that
# each fit the 10-minute limit (the machine stays warm between them):
#   STAGES="tests nccl"            packed-attention + remote-NCCL GPU tests, then the recipe with
#                                   a vLLM rollout process on GPU 1 fed over NCCL
#   STAGES="padded packed resumed" the recipe padded vs packed (flash varlen attention) in one
#                                   command (ratio), a synchronous checkpoint at step 4 (padded)
#                                   vs an async one (packed), a resume from the async one
# Writes into $OUT (the device returns at most 8 files): env.log, <stage>.jsonl per training
# stage, summary.json, logs.tar.gz (every log).
set -u
OUT=${OUT:-/tmp/gpu_features_out}
STAGES=${STAGES:-tests nccl padded packed resumed}
LOGS=/tmp/gpu_feature_logs
mkdir -p $LOGS
# shellcheck source=scripts/gpu/setup_env.sh
source scripts/gpu/setup_env.sh
wants() { [[ " $STAGES " == *" $1 "* ]]; }
finish() { tar -czf "$OUT/logs.tar.gz" -C $LOGS . 2>/dev/null; }
trap finish EXIT

if wants tests; then
  stage "GPU tests: packed attention, remote NCCL rollout"
  # shellcheck disable=SC2086
  timeout 200 python3 -m pytest ${GPU_TESTS:-tests/gpu/test_packed_attention.py tests/gpu/test_remote_nccl.py} \
    -q -s -p no:cacheprovider >"$LOGS/tests.log" 2>&1
  echo "tests rc=$?" | tee -a "$OUT/env.log"
  grep -E "start-up|passed|failed|Error" "$LOGS/tests.log" | tail -8 >>"$OUT/env.log"
fi

stage "build model"
MODEL=/tmp/qwen2_0p5b_body
[ -d $MODEL ] || python3 -m oumi_megatron.testing.tiny_models qwen2_0p5b_body $MODEL >>"$OUT/env.log" 2>&1

train() {  # name, seconds, overrides...
  local name=$1 limit=$2; shift 2
  stage "train $name"
  timeout "$limit" torchrun --standalone --nproc-per-node 1 -m oumi_megatron train \
    -c configs/recipes/qwen2_grpo_gpu.yaml model.model_name=$MODEL training.output_dir=/tmp/run_$name \
    "$@" >"$LOGS/$name.log" 2>&1
  echo "$name rc=$?" | tee -a "$OUT/env.log"
  cp /tmp/run_$name/metrics.jsonl "$OUT/$name.jsonl" 2>/dev/null
}
STEPS="training.max_steps=5 training.save_final_model=false training.save_steps=4"
# Default packing budget: micro_batch_size x (max prompt + completion) = the padded rows' slots.
PACKED="megatron.enable_sequence_packing=true"
ASYNC="megatron.checkpoint_config.use_async_checkpoint=true"
# The recipe over NCCL only when its building block passed (a vLLM start that fails can hang).
if wants nccl && [ "$(nvidia-smi -L | wc -l)" -ge 2 ] && ! grep -q "FAILED.*remote_nccl" "$LOGS/tests.log" 2>/dev/null; then
  train nccl 240 training.max_steps=4 training.save_steps=0 training.save_final_model=false \
    megatron.weight_sync_method=nccl megatron.vllm_gpu_memory_utilization=0.6
  grep -E "rollout process" "$LOGS/nccl.log" | tail -5 >>"$OUT/env.log"
fi
wants padded && train padded 170 $STEPS
wants packed && train packed 200 $STEPS $PACKED $ASYNC
if wants resumed; then
  rm -rf /tmp/run_resumed && cp -r /tmp/run_packed /tmp/run_resumed
  train resumed 150 $STEPS $PACKED $ASYNC training.resume_from_checkpoint=step_4
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
for p in sorted(out.glob("*.jsonl")):
    rows = [json.loads(l) for l in p.read_text().splitlines() if l.strip()]
    later = [r for r in rows if r["step"] >= 2] or rows
    summary[p.stem] = {"median_steps_2_on": {k: statistics.median(r[k] for r in later)
                                             for k in keys if later and all(k in r for r in later)},
                       "rows": [{k: r.get(k) for k in ("step",) + keys} for r in rows]}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps({k: v["median_steps_2_on"] for k, v in summary.items()}, indent=1))
PY
stage "done"
