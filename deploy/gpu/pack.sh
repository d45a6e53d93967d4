#!/usr/bin/env bash
# Build the GPU payload here (internet: PyPI), in parts that each fit one device call:
#   deploy/gpu/pack.sh MODEL_DIR [WORK_DIR]
# -> .gpu/c1 .. .gpu/cN (ignored via .git/info/exclude), each: one part + manifest.
# Payload: vLLM 0.26.0 (the newest release pinned to the image's torch 2.11.0) with what a
# text model on Hopper does not need removed (FA2 kernels: Hopper uses FA3; the MoE kernels;
# the Rust front end; DeepGEMM/FMHA headers), xz-compressed: 304 MB wheel -> ~74 MB; the
# wheels of deploy/gpu/deps.txt (~38 MB); the model folder.
set -euo pipefail
MODEL=${1:?model folder}
WORK=${2:-/tmp/gpuwhl}
PART_MB=${PART_MB:-58}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PLAT="--only-binary=:all: --python-version 3.12 --implementation cp"
for n in 2_17 2_24 2_26 2_27 2_28 2_31 2_5 2_12; do PLAT="$PLAT --platform manylinux_${n}_x86_64"; done
PLAT="$PLAT --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
mkdir -p "$WORK/deps" "$WORK/payload"
cd "$WORK"
if [ ! -f vllm-trim.tar.xz ]; then
  python3 -m pip download --no-deps $PLAT -d . vllm==0.26.0
  rm -rf x && mkdir x && (cd x && unzip -q ../vllm-0.26.0-*.whl \
    -x 'vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so' 'vllm/vllm-rs' 'vllm/_moe_C_stable_libtorch.abi3.so')
  find x/vllm/third_party -name '_C.cpython-31[0134]*' -delete
  find x/vllm/third_party -type d -name include -prune -exec rm -rf {} +
  (cd x && tar -cf - vllm vllm-0.26.0.dist-info) | xz -T2 -6 > vllm-trim.tar.xz
fi
python3 -m pip download -q --no-deps $PLAT -d deps -r "$ROOT/deploy/gpu/deps.txt"
rm -rf payload && mkdir -p payload/deps
cp vllm-trim.tar.xz payload/
cp deps/*.whl payload/deps/
tar -cf payload/model.tar -C "$(dirname "$MODEL")" "$(basename "$MODEL")"
(cd payload && sha256sum vllm-trim.tar.xz deps/*.whl model.tar > ../payload.sha256)
cp payload.sha256 payload/
tar -cf payload.tar -C payload .
rm -rf parts && mkdir parts && split -b "${PART_MB}M" -d -a 2 payload.tar parts/part-
count=$(ls parts | wc -l)
rm -rf "$ROOT/.gpu" && mkdir -p "$ROOT/.gpu"
i=0
for part in parts/part-*; do
  i=$((i + 1)); mkdir -p "$ROOT/.gpu/c$i"; cp "$part" "$ROOT/.gpu/c$i/"
  echo "$count" > "$ROOT/.gpu/c$i/parts.txt"
done
grep -qx '/.gpu/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/.gpu/' >> "$ROOT/.git/info/exclude"
du -sh "$ROOT"/.gpu/c*
