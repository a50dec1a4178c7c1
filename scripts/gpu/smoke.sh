#!/usr/bin/env bash
# The GRPO trainer on the lent GPU machine, in one device command (scripts/gpu/README.md):
#   install the carried wheel sets (vLLM, Megatron, Oumi) -> GPU tests -> build a random Qwen2 ->
#   train configs/recipes/qwen2_grpo_gpu.yaml with torchrun (bf16, distributed optimizer, vLLM,
#   NCCL, HF export) -> load + generate with the export -> a control run without weight sync
#   (python -m form) -> summary. Every stage is guarded: a failure is logged and the next runs.
# Writes into $OUT (at most 8 files): env.log gpu_tests.log train.log metrics.jsonl export.log
#   control.log control_metrics.jsonl summary.json
# Usage on the device (carry .vp/meg and .vp/oumi; the vLLM parts already in /tmp/vp):
#   bash scripts/gpu/smoke.sh
set -u
OUT=${OUT:-/tmp/gpu_smoke_out}
# shellcheck source=scripts/gpu/setup_env.sh
source scripts/gpu/setup_env.sh

if [ "${SKIP_GPU_TESTS:-0}" != 1 ]; then
  stage "gpu tests"
  timeout 240 python3 -m pytest -m gpu tests/gpu -x -q -p no:cacheprovider >"$OUT/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?" | tee -a "$OUT/env.log"
fi

stage "build model"
MODEL=/tmp/qwen2_0p5b_body
[ -d $MODEL ] || python3 -m oumi_megatron.testing.tiny_models qwen2_0p5b_body $MODEL >>"$OUT/env.log" 2>&1

stage "train (torchrun)"
RUN=/tmp/qwen2_grpo_gpu
rm -rf $RUN
timeout 300 torchrun --standalone --nproc-per-node 1 -m oumi_megatron train \
  -c configs/recipes/qwen2_grpo_gpu.yaml model.model_name=$MODEL training.output_dir=$RUN \
  >"$OUT/train.log" 2>&1
echo "train rc=$?" | tee -a "$OUT/env.log"
cp $RUN/metrics.jsonl "$OUT/metrics.jsonl" 2>/dev/null

stage "export check"
timeout 120 python3 - $RUN/hf_model $MODEL >"$OUT/export.log" 2>&1 <<'PY'
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
exported, initial = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(exported)
model = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.bfloat16).cuda().eval()
base = AutoModelForCausalLM.from_pretrained(initial, dtype=torch.bfloat16)
changed = max((p.detach().float().cpu() - q.float()).abs().max().item()
              for p, q in zip(model.parameters(), base.parameters()))
print("params", sum(p.numel() for p in model.parameters()), "max |trained - initial|", changed)
msgs = [{"role": "user", "content": "What is 3 + 4? Answer with the number only."}]
ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
ids = {k: v.cuda() for k, v in ids.items()}
torch.manual_seed(0)
out = model.generate(**ids, max_new_tokens=24, do_sample=True)
print("generated:", repr(tok.decode(out[0, ids["input_ids"].shape[1]:])))
print("EXPORT_OK")
PY
echo "export rc=$?" | tee -a "$OUT/env.log"

stage "control: no weight sync (python -m)"
CTRL=/tmp/qwen2_grpo_gpu_nosync
rm -rf $CTRL
if [ "${SKIP_CONTROL:-0}" != 1 ] && [ "$(elapsed)" -lt 430 ]; then
  timeout $(( 560 - $(elapsed) )) python3 -m oumi_megatron train -c configs/recipes/qwen2_grpo_gpu.yaml \
    model.model_name=$MODEL training.output_dir=$CTRL training.max_steps=4 training.save_steps=0 \
    training.save_final_model=false megatron.enable_weight_sync=false \
    megatron.weight_sync_method=auto >"$OUT/control.log" 2>&1
  echo "control rc=$?" | tee -a "$OUT/env.log"
  cp $CTRL/metrics.jsonl "$OUT/control_metrics.jsonl" 2>/dev/null
else
  echo "control skipped: $(elapsed) s used" | tee -a "$OUT/env.log"
fi

stage "summary"
python3 - "$OUT" >>"$OUT/env.log" 2>&1 <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
def rows(name):
    p = out / name
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()] if p.exists() else []
summary = {}
for name, key in (("metrics.jsonl", "train"), ("control_metrics.jsonl", "control_no_sync")):
    r = rows(name)
    if not r:
        continue
    later = r[1:] or r
    med = lambda k: statistics.median(x[k] for x in later if k in x) if any(k in x for x in later) else None
    summary[key] = {
        "steps": len(r),
        "per_step": [{k: x.get(k) for k in ("step", "mismatch/token_mult_prob_error",
                      "mismatch/max_abs_logprob_diff", "reward/mean", "grad_norm", "time/step",
                      "time/rollout", "time/update", "time/sync", "time/checkpoint",
                      "perf/tokens_per_second", "perf/mfu")} for x in r],
        "median_steps_2_on": {k: med(k) for k in ("time/rollout", "time/reward", "time/update",
                              "time/sync", "time/step", "perf/tokens_per_second",
                              "perf/tokens_per_second_per_device", "perf/tflops_per_device",
                              "perf/mfu", "mismatch/token_mult_prob_error")},
    }
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary, indent=1))
PY
stage "done"
