#!/usr/bin/env bash
# Build the GPU payload here (internet: PyPI), in parts that each fit one device call:
#   deploy/gpu/pack.sh MODEL_DIR [WORK_DIR]
# -> $DEST/c1 .. $DEST/cN (DEST defaults to .gpu in the repo root, ignored via
#    .git/info/exclude), each: one part + the number of parts.
# Payload: vLLM 0.26.0 (the newest release pinned to the image's torch 2.11.0) with what a
# text model on Hopper does not need removed (FA2 kernels: Hopper uses FA3; the MoE kernels;
# the Rust front end; DeepGEMM/FMHA headers), re-compressed (COMPRESS=xz: 304 MB wheel ->
# ~74 MB, slow; COMPRESS=gz: ~100 MB, fast); the wheels of deploy/gpu/deps.txt (~40 MB) and,
# with GATEWAY=1, of deploy/gpu/gateway-deps.txt (~103 MB: the gateway and its embedder);
# the model folder.
set -euo pipefail
MODEL=${1:?model folder}
WORK=${2:-/tmp/gpuwhl}
PART_MB=${PART_MB:-58}
COMPRESS=${COMPRESS:-xz}
GATEWAY=${GATEWAY:-0}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST=${DEST:-$ROOT/.gpu}
PLAT="--only-binary=:all: --python-version 3.12 --implementation cp"
for n in 2_17 2_24 2_26 2_27 2_28 2_31 2_5 2_12; do PLAT="$PLAT --platform manylinux_${n}_x86_64"; done
PLAT="$PLAT --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
mkdir -p "$WORK/deps" "$WORK/payload"
cd "$WORK"
TREE=vllm-trim.tar.$COMPRESS
if [ ! -f "$TREE" ]; then
  python3 -m pip download --no-deps $PLAT -d . vllm==0.26.0
  rm -rf x && mkdir x && (cd x && unzip -q ../vllm-0.26.0-*.whl \
    -x 'vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so' 'vllm/vllm-rs' 'vllm/_moe_C_stable_libtorch.abi3.so')
  find x/vllm/third_party -name '_C.cpython-31[0134]*' -delete
  find x/vllm/third_party -type d -name include -prune -exec rm -rf {} +
  if [ "$COMPRESS" = xz ]; then squeeze="xz -T2 -6"; else squeeze="gzip -6"; fi
  (cd x && tar -cf - vllm vllm-0.26.0.dist-info) | $squeeze > "$TREE.tmp"
  mv "$TREE.tmp" "$TREE"
fi
python3 -m pip download -q --no-deps $PLAT -d deps -r "$ROOT/deploy/gpu/deps.txt"
if [ "$GATEWAY" = 1 ]; then
  python3 -m pip download -q --no-deps $PLAT -d deps -r "$ROOT/deploy/gpu/gateway-deps.txt"
fi
rm -rf payload && mkdir -p payload/deps
cp "$TREE" payload/
cp deps/*.whl payload/deps/
tar -cf payload/model.tar -C "$(dirname "$MODEL")" "$(basename "$MODEL")"
(cd payload && sha256sum "$TREE" deps/*.whl model.tar > ../payload.sha256)
cp payload.sha256 payload/
# Fixed order and metadata: the model comes after vLLM and the wheels, so the first parts do
# not depend on it (they can be staged while the model is still being made).
tar -cf payload.tar -C payload --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
  "$TREE" deps model.tar payload.sha256
rm -rf parts && mkdir parts && split -b "${PART_MB}M" -d -a 2 payload.tar parts/part-
count=$(ls parts | wc -l)
rm -rf "$DEST" && mkdir -p "$DEST"
i=0
for part in parts/part-*; do
  i=$((i + 1)); mkdir -p "$DEST/c$i"; cp "$part" "$DEST/c$i/"
  echo "$count" > "$DEST/c$i/parts.txt"
done
rel=${DEST#"$ROOT"/}
if [ "$rel" != "$DEST" ]; then
  grep -qx "/$rel/" "$ROOT/.git/info/exclude" 2>/dev/null || echo "/$rel/" >> "$ROOT/.git/info/exclude"
fi
du -sh "$DEST"/c*
