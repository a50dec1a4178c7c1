#!/usr/bin/env bash
# One device command (scripts/gpu/README.md): the GRPO step of
# configs/recipes/grpo-qwen2.5-1.5b-1n1g-tp1.yaml on one GPU (vLLM colocated via vLLM's external
# launcher, weights synced on the GPU), then vLLM alone on the same batch.
# Writes into $OUT: env.log train.log metrics.jsonl vllm_alone.json summary.json
set -u
OUT=${OUT:-/tmp/out}
source scripts/gpu/setup_env.sh
RECIPE=configs/recipes/grpo-qwen2.5-1.5b-1n1g-tp1.yaml
MODEL=/tmp/qwen2.5_1.5b RUN=/tmp/run_qwen15
STEPS=${STEPS:-6}

stage "model"
[ -d $MODEL ] || python3 -m oumi_megatron.testing.tiny_models qwen2.5_1.5b $MODEL >>"$OUT/env.log" 2>&1

stage "train (torchrun, $STEPS steps)"
rm -rf $RUN
timeout ${TRAIN_TIMEOUT:-330} torchrun --standalone --nproc-per-node 1 -m oumi_megatron train \
  -c $RECIPE model.model_name=$MODEL training.output_dir=$RUN training.max_steps=$STEPS \
  ${EXTRA:-} >"$OUT/train.log" 2>&1
echo "train rc=$?" | tee -a "$OUT/env.log"
cp $RUN/metrics.jsonl "$OUT/" 2>/dev/null

stage "vLLM alone"
[ -n "${SKIP_VLLM_ALONE:-}" ] || timeout $(( 570 - $(elapsed) )) python3 benchmarks/rollout_vs_vllm.py -c $RECIPE \
  model.model_name=$MODEL training.output_dir=$RUN --step 1 --reps 3 \
  >"$OUT/vllm_alone.json" 2>>"$OUT/env.log"
echo "vllm alone rc=$?" | tee -a "$OUT/env.log"

stage "HBM copy bandwidth"
python3 - >"$OUT/hbm.json" 2>>"$OUT/env.log" <<'PY'
import json, torch
n = 1_543_714_304  # elements of Qwen2.5-1.5B's parameters (bf16: 3.09 GB)
src = torch.randn(n, dtype=torch.bfloat16, device="cuda"); dst = torch.empty_like(src)
times = []
for _ in range(12):
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record(); dst.copy_(src); b.record(); torch.cuda.synchronize()
    times.append(a.elapsed_time(b) / 1e3)
t = sorted(times[2:])[len(times[2:]) // 2]
print(json.dumps({"bytes": 2 * n, "copy_s": t, "hbm_GBps": 2 * 2 * n / t / 1e9, "bound_s": 2 * 2 * n / (2 * 2 * n / t)}))
PY

stage "summary"
python3 - "$OUT" >>"$OUT/env.log" 2>&1 <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()] if (out / "metrics.jsonl").exists() else []
later = rows[1:] or rows
summary = {k: statistics.median(r[k] for r in later) for k in later[0] if k.startswith(("time/", "sync/", "perf/", "mismatch/"))} if later else {}
summary["steps"] = len(rows)
# Time no phase accounts for (time/step minus the phases): should stay near 0.
untimed = [r["time/step"] - sum(v for k, v in r.items() if k.startswith("time/") and k != "time/step") for r in later]
summary["untimed_s"] = statistics.median(untimed) if untimed else None
summary["sync_s_per_step"] = [r.get("time/sync") for r in rows]
summary["sync_direct_per_step"] = [r.get("sync/direct") for r in rows]
if (out / "hbm.json").exists() and (out / "hbm.json").read_text().strip():
    summary["hbm"] = json.loads((out / "hbm.json").read_text())
summary["rollout_step2_s"] = rows[1]["time/rollout"] if len(rows) > 1 else None
if (out / "vllm_alone.json").exists() and (out / "vllm_alone.json").read_text().strip():
    summary["vllm_alone"] = json.loads((out / "vllm_alone.json").read_text().splitlines()[-1])
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary, indent=1))
PY
