# Sourced by the device scripts (smoke.sh, features.sh) after they set OUT: stage timing
# (elapsed, stage), environment, carried wheel sets, a version report in $OUT/env.log.
mkdir -p "$OUT"
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
stage() { echo "=== [$(elapsed) s] $*" | tee -a "$OUT/env.log"; }
# The GPU tests named in GPU_TESTS (none: nothing), within TESTS_LIMIT seconds (default $1).
gpu_tests() {
  [ -n "${GPU_TESTS:-}" ] || return 0
  stage "gpu tests: $GPU_TESTS"
  timeout ${TESTS_LIMIT:-$1} python3 -m pytest -q -m gpu -p no:cacheprovider $GPU_TESTS >"$OUT/gpu_tests.log" 2>&1
  echo "gpu tests rc=$? $(tail -1 "$OUT/gpu_tests.log")" | tee -a "$OUT/env.log"
}
export PYTHONUNBUFFERED=1 DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline
export VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_USE_FLASHINFER_SAMPLER=0 NCCL_NVLS_ENABLE=0
export TOKENIZERS_PARALLELISM=false

stage "install"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 --version; } >>"$OUT/env.log" 2>&1
install_sh=$(ls .vp/*/install.sh | head -1)
# shellcheck disable=SC1090
source "$install_sh" ${INSTALL_SETS:-vllm megatron oumi} >>"$OUT/env.log" 2>&1 || { echo "install failed" >>"$OUT/env.log"; }
# protobuf at uv.lock's version: the image's is not one that wandb 0.25 (imported by Oumi) knows.
# (Kept from an earlier command on the same machine when this one carries no Oumi set.)
[ -d /tmp/site_extra/google ] || python3 -m pip install -q --no-index --no-deps --no-compile \
  --target /tmp/site_extra .vp/oumi/whl/protobuf-*.whl >>"$OUT/env.log" 2>&1
[ -d /tmp/site_extra/google ] && export PYTHONPATH=/tmp/site_extra:$PYTHONPATH
if ! python3 -c "import pytest" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site_pytest .vp/oumi/whl/pytest-*.whl .vp/oumi/whl/pluggy-*.whl .vp/oumi/whl/iniconfig-*.whl >>"$OUT/env.log" 2>&1
  export PYTHONPATH=/tmp/site_pytest:$PYTHONPATH
fi
export PYTHONPATH=$PWD/src:$PYTHONPATH
# The CuTe DSL (FlashAttention-4) finds its packages through a .pth file, which PYTHONPATH skips.
[ -d /tmp/site/nvidia_cutlass_dsl/dsl_packages ] && export PYTHONPATH=$PYTHONPATH:/tmp/site/nvidia_cutlass_dsl/dsl_packages
python3 - >>"$OUT/env.log" 2>&1 <<'PY'
import importlib, time
import google.protobuf
print("protobuf", google.protobuf.__version__, google.protobuf.__file__)
for name in ("torch", "transformers", "vllm", "megatron.core", "oumi", "pydantic", "pandas", "pyarrow",
             "mlflow", "wandb", "matplotlib", "pytest", "modelopt", "flash_attn.cute"):
    t = time.perf_counter()
    try:
        m = importlib.import_module(name)
        print(f"{name:14s} {getattr(m, '__version__', '?'):22s} {time.perf_counter() - t:5.1f} s  {m.__file__}")
    except Exception as e:  # noqa: BLE001
        print(f"{name:14s} MISSING: {type(e).__name__}: {e}")
import torch
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
PY

