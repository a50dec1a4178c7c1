#!/usr/bin/env bash
# One device command on a 2-GPU machine (scripts/gpu/README.md): the disaggregated figures of
# the 1.5B recipe (configs/recipes/grpo-qwen2.5-1.5b-1n1g-tp1.yaml, random weights), trainer on
# GPU 0 and a vLLM rollout process on GPU 1 fed over NCCL:
#   async      benchmarks/async_grpo.py --method nccl: on-policy, then one step off-policy
#              (tokens/s ratio; the on-policy run's weight sync: seconds and bytes)
#   broadcast  benchmarks/nccl_broadcast.py: one flat NCCL broadcast GPU 0 -> GPU 1 of the
#              bytes the sync moved, and the same in the sync's buckets
#   replicas   colocated on both GPUs (DP2): one vLLM rollout replica per GPU against one
#              replica over both (vLLM TP2), the same prompts and seeds (its own command:
#              STAGES=replicas)
# Writes into $OUT: env.log async.json async.log broadcast.json replicas_{1,2}.jsonl
# replicas_{1,2}.log summary.json
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

if wants replicas; then
  for tp in 1 2; do  # rollout TP1: 2 replicas; rollout TP2: 1 replica over both GPUs
    n=$(( 2 / tp )); stage "colocated DP2, $n rollout replica(s)"
    rm -rf /tmp/run_replicas
    # shellcheck disable=SC2086
    timeout ${REPLICAS_LIMIT:-270} torchrun --standalone --nproc-per-node 2 -m oumi_megatron train \
      -c $RECIPE model.model_name=$MODEL training.output_dir=/tmp/run_replicas \
      training.max_steps=${STEPS:-8} training.save_final_model=false \
      megatron.rollout_tensor_parallel_size=$tp ${EXTRA:-} >"$OUT/replicas_$n.log" 2>&1
    echo "replicas $n rc=$?" | tee -a "$OUT/env.log"
    cp /tmp/run_replicas/metrics.jsonl "$OUT/replicas_$n.jsonl" 2>/dev/null
  done
fi

stage "summary"
python3 - "$OUT" >>"$OUT/env.log" 2>&1 <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
def load(name):
    p = out / name
    return json.loads(p.read_text()) if p.exists() and p.read_text().strip() else None
run, flat = load("async.json"), load("broadcast.json")
summary = {}
for n in (1, 2):
    p = out / f"replicas_{n}.jsonl"
    rows = [json.loads(l) for l in p.read_text().splitlines() if l.strip()][1:] if p.exists() else []
    if rows:
        summary[f"replicas_{n}"] = {k: statistics.median(r[k] for r in rows) for k in ("time/rollout", "time/update", "time/sync",
                                                        "time/step", "perf/tokens_per_second")}
if "replicas_1" in summary and "replicas_2" in summary:
    summary["rollout_1_over_2_replicas"] = summary["replicas_1"]["time/rollout"] / summary["replicas_2"]["time/rollout"]
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
