#!/usr/bin/env bash
# One device command (scripts/gpu/README.md): the attention kernels and the RoPE/layout kernel at
# the training step's shapes (benchmarks/attention_kernels.py, benchmarks/layer_kernels.py). Needs
# the FlashAttention-4 and Megatron wheel sets (the FA4 parts gathered into /tmp/vp by earlier
# commands). Writes into $OUT: env.log attention.json attention.log rope.json rope.log.
set -u
OUT=${OUT:-/tmp/out}
INSTALL_SETS="fa4 megatron"
source scripts/gpu/setup_env.sh
python3 -c "import flash_attn.cute, cutlass; print('fa4', flash_attn.cute.__file__)" >>"$OUT/env.log" 2>&1

gpu_tests 240
stage "attention kernels"
timeout ${ATTN_LIMIT:-360} python3 benchmarks/attention_kernels.py --json "$OUT/attention.json" \
  ${ATTN_ARGS:-} >"$OUT/attention.log" 2>&1
echo "attention rc=$?" | tee -a "$OUT/env.log"
stage "rope kernel"
timeout ${ROPE_LIMIT:-120} python3 benchmarks/layer_kernels.py --json "$OUT/rope.json" >"$OUT/rope.log" 2>&1
echo "rope rc=$?" | tee -a "$OUT/env.log"
stage "done"
