#!/usr/bin/env bash
# Pack the Oumi wheel set (scripts/gpu/oumi.txt) for the GPU machine, like ../shared/gpu/split_parts.sh:
# download (cp312, manylinux x86_64, --no-deps) into .whl/oumi, unpack into one tree, drop what a
# training run never loads, tar | xz, split into parts: .vp/parts/oumi.tar.xz.part-* + oumi.sha256.
# On the device, ../shared/gpu/install.sh (copied into a carried folder) unpacks it into /tmp/site.
# Usage (project root): scripts/gpu/pack_oumi.sh        (PART_SIZE=40M by default)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
whl=.whl/oumi out=.vp/parts name=oumi
PY=${PY:-python3}
PART_SIZE=${PART_SIZE:-40M}
mkdir -p "$whl" "$out"
plat=()
for p in manylinux_2_35_x86_64 manylinux_2_31_x86_64 manylinux_2_28_x86_64 manylinux_2_24_x86_64 \
         manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do plat+=(--platform "$p"); done
grep -v '^\s*#' "$here/oumi.txt" | sed '/^\s*$/d' | while read -r spec; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plat[@]}" -d "$whl" "$spec" 2>/dev/null || { echo "no wheel: $spec" >&2; exit 1; }
done
stage=$(mktemp -d); trap 'rm -rf "$stage"' EXIT
s="$stage/site"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --ignore-requires-python \
  --target "$s" "$whl"/*.whl 2> >(grep -v -i warning >&2)
# Never loaded by a training run: mlflow's web UI, wandb's service binaries (wandb.init is off in
# the GPU recipe), TensorBoard's web UI, pyarrow's Flight RPC and C++ headers, test suites.
rm -rf "$s/mlflow/server/js" "$s/wandb/bin" "$s/tensorboard/webfiles.zip" "$s/pyarrow/include" \
       "$s/pyarrow/tests" "$s/pandas/tests" "$s/matplotlib/tests" "$s/bin"
rm -f "$s"/pyarrow/libarrow_flight.so* "$s"/pyarrow/_flight*.so "$s"/pyarrow/libarrow_python_flight.so*
find "$s" -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
rm -f "$out/$name.tar.xz.part-"* "$out/$name.sha256"
echo "staged: $(du -sh "$s" | cut -f1)"
tar -C "$s" -cf - . | xz -T0 -6 | tee >(sha256sum | cut -d' ' -f1 > "$out/$name.sha256") \
  | split -b "$PART_SIZE" -a 2 - "$out/$name.tar.xz.part-"
sleep 1
ls -l "$out/$name".tar.xz.part-* | awk '{printf "%s %.1f MiB\n", $9, $5/1048576}'
echo "sha256 $(cat "$out/$name.sha256")"
