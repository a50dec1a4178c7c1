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

stage "train step (${MODES:-all modes})"
WORK=${WORK:-/tmp/train_step}
timeout $(( ${LIMIT:-570} - $(elapsed) )) python3 ${BENCH_DIR:-.}/benchmarks/train_step.py --model-dir $MODEL \
  --work $WORK ${MODES:+--modes $MODES} --profile-modes "${PROFILE:-packed,padded}" \
  --json "$OUT/train_step.json" ${ARGS:-} >"$OUT/train_step.out" 2>"$OUT/train_step.log"
echo "train_step rc=$?" | tee -a "$OUT/env.log"
cp $WORK/profile_* "$OUT/" 2>/dev/null
stage "done"
