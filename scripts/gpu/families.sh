#!/usr/bin/env bash
# One device command (scripts/gpu/README.md): every supported family's weight sync from
# Megatron into a colocated vLLM engine (tests/gpu/test_family_vllm_sync.py), PARALLEL families
# at a time on the one GPU (each its own process and vLLM engine), plus the GPU tests named in
# GPU_TESTS. Needs the vLLM, Megatron and Oumi sets.
# Writes into $OUT: env.log families.jsonl family_logs.tar.gz gpu_tests.log
set -u
OUT=${OUT:-/tmp/out}
source scripts/gpu/setup_env.sh
FAMILIES=${FAMILIES:-llama qwen2 qwen3 mistral qwen3_moe deepseek_v3 glm4_moe mixtral olmoe gemma3 gemma2 gpt_oss}

gpu_tests ${TESTS_TIMEOUT:-150}

stage "family sync into vLLM: $FAMILIES (${PARALLEL:-3} at a time)"
mkdir -p /tmp/family_logs
export FAMILY_VLLM_MEMORY=${FAMILY_VLLM_MEMORY:-0.12}
printf '%s\n' $FAMILIES | xargs -P ${PARALLEL:-3} -I{} sh -c \
  "timeout ${FAMILY_TIMEOUT:-240} python3 -m pytest -q -s -m gpu -p no:cacheprovider \
   'tests/gpu/test_family_vllm_sync.py::test_sync_into_vllm[{}]' >/tmp/family_logs/{}.log 2>&1; \
   echo \"{} rc=\$? \$(tail -1 /tmp/family_logs/{}.log)\" >>$OUT/env.log"
# vLLM's start-up memory profiling refuses to run while a neighbour frees memory: a family
# that failed that way beside others runs again alone.
for f in $FAMILIES; do
  if grep -q "Error in memory profiling" /tmp/family_logs/$f.log 2>/dev/null; then
    mv /tmp/family_logs/$f.log /tmp/family_logs/$f.parallel.log
    timeout ${FAMILY_TIMEOUT:-240} python3 -m pytest -q -s -m gpu -p no:cacheprovider \
      "tests/gpu/test_family_vllm_sync.py::test_sync_into_vllm[$f]" >/tmp/family_logs/$f.log 2>&1
    echo "$f (again, alone) rc=$? $(tail -1 /tmp/family_logs/$f.log)" >>"$OUT/env.log"
  fi
done
for f in /tmp/family_logs/*.log; do
  case $f in *.parallel.log) ;; *) grep -o '{"arch".*}' "$f" ;; esac
done >"$OUT/families.jsonl"
tar czf "$OUT/family_logs.tar.gz" -C /tmp family_logs
stage "done"
