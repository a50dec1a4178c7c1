#!/usr/bin/env bash
# One device command on a 2-GPU machine (scripts/gpu/README.md): the disaggregated figures of
# the 1.5B recipe (configs/recipes/grpo-qwen2.5-1.5b-1n1g-tp1.yaml, random weights), trainer on
# GPU 0 and a vLLM rollout process on GPU 1 fed over NCCL:
#   async      benchmarks/async_grpo.py --method nccl: on-policy, then one step off-policy
#              (tokens/s ratio; the on-policy run's weight sync: seconds and bytes)
#   broadcast  benchmarks/nccl_broadcast.py: one flat NCCL broadcast GPU 0 -> GPU 1 of the
#              bytes the sync moved, and the same in the sync's buckets
# Writes into $OUT: env.log async.json async.log broadcast.json summary.json
set -u
OUT=${OUT:-/tmp/out}
source scripts/gpu/setup_env.sh
RECIPE=configs/recipes/grpo-qwen2.5-1.5b-1n1g-tp1.yaml
MODEL=/tmp/qwen2.5_1.5b
STAGES=${STAGES:-async broadcast}
wants() { [[ " $STAGES " == *" $1 "* ]]; }

stage "model"
[ -d $MODEL ] || python3 -m oumi_megatron.testing.tiny_models qwen2.5_1.5b $MODEL >>"$OUT/env.log" 2>&1

if wants async; then
  stage "async vs on-policy (${STEPS:-8} steps each)"
  # shellcheck disable=SC2086
  timeout $(( ${ASYNC_LIMIT:-420} )) python3 benchmarks/async_grpo.py --recipe $RECIPE \
    --model $MODEL --method nccl --steps ${STEPS:-8} --warmup 2 --json "$OUT/async.json" \
    megatron.vllm_gpu_memory_utilization=0.6 ${EXTRA:-} >"$OUT/async.log" 2>&1
  echo "async rc=$?" | tee -a "$OUT/env.log"
fi

if wants broadcast; then
  BYTES=$(python3 -c "import json; print(int(json.load(open('$OUT/async.json'))['modes']['on_policy']['sync_bytes']))" 2>/dev/null || echo 3087428608)
  stage "flat broadcast of $BYTES bytes"
  timeout 120 torchrun --standalone --nproc-per-node 2 benchmarks/nccl_broadcast.py \
    --bytes "$BYTES" --bucket-mb ${BUCKET_MB:-512} --json "$OUT/broadcast.json" >>"$OUT/env.log" 2>&1
  echo "broadcast rc=$?" | tee -a "$OUT/env.log"
fi

stage "summary"
python3 - "$OUT" >>"$OUT/env.log" 2>&1 <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def load(name):
    p = out / name
    return json.loads(p.read_text()) if p.exists() and p.read_text().strip() else None
run, flat = load("async.json"), load("broadcast.json")
summary = {}
if run:
    summary["async_over_on_policy_tokens_per_s"] = run["tokens_per_s_async_over_on_policy"]
    summary["on_policy"] = {k: v for k, v in run["modes"]["on_policy"].items() if k != "reward_curve"}
    summary["async"] = {k: v for k, v in run["modes"]["async"].items() if k != "reward_curve"}
if flat:
    summary["flat_broadcast"] = flat
if run and flat:
    summary["sync_weights_over_flat_broadcast"] = run["modes"]["on_policy"]["sync_weights_s"] / flat["flat"]["median_s"]
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary, indent=1))
PY
stage "done"
