#!/usr/bin/env bash
# One device command (scripts/gpu/README.md): benchmarks/train_step.py on a random-weight
# Qwen2.5-1.5B, every mode in its own process. Needs only the Megatron and Oumi wheel sets:
# carry [".vp/meg", ".vp/oumi"]. Writes into $OUT: env.log train_step.json train_step.log
# profile_<mode>.txt. BENCH_DIR: another copy of the repository whose benchmark and src/ to run
# (a baseline in the same call); WORK: its scratch directory.
set -u
OUT=${OUT:-/tmp/out}
INSTALL_SETS=${INSTALL_SETS:-"megatron oumi"}
source scripts/gpu/setup_env.sh
MODEL=/tmp/qwen2.5_1.5b

stage "model"
[ -d $MODEL ] || python3 -m oumi_megatron.testing.tiny_models qwen2.5_1.5b $MODEL >>"$OUT/env.log" 2>&1

gpu_tests 200

if [ -n "${KERNELS:-}" ]; then  # the layer's RoPE and SwiGLU backward kernels alone, and their source
  stage "layer kernels"
  timeout ${KERNELS_LIMIT:-150} python3 benchmarks/layer_kernels.py --json "$OUT/layer_kernels.json" \
    --dump /tmp/kernel_src ${KERNELS_ARGS:-} >"$OUT/layer_kernels.log" 2>&1
  echo "layer kernels rc=$?" | tee -a "$OUT/env.log"
  mkdir -p "$OUT/kernel_src"
  grep -rlE --include=*.py "def triton_poi_fused.*(cat|neg|flip)" /tmp/kernel_src | head -6 | while read -r f; do cp "$f" "$OUT/kernel_src/"; done
fi

stage "train step (${MODES:-all modes})"
WORK=${WORK:-/tmp/train_step}
[ -z "${KERNELS:-}" ] || export TORCHINDUCTOR_CACHE_DIR=/tmp/step_kernel_src  # its Triton source
timeout $(( ${LIMIT:-570} - $(elapsed) )) python3 ${BENCH_DIR:-.}/benchmarks/train_step.py --model-dir $MODEL \
  --work $WORK ${MODES:+--modes $MODES} --profile-modes "${PROFILE:-packed,padded}" \
  --json "$OUT/train_step.json" ${ARGS:-} >"$OUT/train_step.out" 2>"$OUT/train_step.log"
echo "train_step rc=$?" | tee -a "$OUT/env.log"
cp $WORK/profile_* "$OUT/" 2>/dev/null
if [ -n "${KERNELS:-}" ]; then  # the step's RoPE/layout and SwiGLU kernels
  mkdir -p "$OUT/step_kernel_src"
  grep -rlE --include=*.py "def triton_poi_fused.*(cat_clone|cat_mul_neg)" /tmp/step_kernel_src | head -4 |
    while read -r f; do cp "$f" "$OUT/step_kernel_src/"; done
fi
stage "done"
