#!/usr/bin/env bash
# Run vLLM on the lent GPU machine (no network, <= 64 MiB carried per call), in steps:
#   deploy/gpu/device.sh stage DIR    keep the payload part(s) of DIR in /tmp/stage (one call each)
#   deploy/gpu/device.sh run          join the parts, install vLLM + deps under /tmp/site,
#                                     start the engine pool on the AWQ model, benchmark, stop
#   deploy/gpu/device.sh stack        the same install, then the whole stack in one run: the
#                                     engine pool (two engines on the GPU), the gateway and the
#                                     load generator (python -m load.bench_gpu_stack)
# The payload (deploy/gpu/pack.sh builds it on the dev machine) is one tar, split in parts: a trimmed vLLM
# 0.26.0 tree (xz or gz), the wheels vLLM (and, for `stack`, the gateway) imports that the image
# lacks, and the quantized model. A src.tar staged beside the parts (deploy/gpu/overlay.sh) is
# unpacked over the repo copy first: the code of the branch being measured, and Banking77.
set -euo pipefail
OUT=${OUT:-/tmp/out}
STAGE=/tmp/stage
MODEL=/tmp/models/smollm2-135m-instruct-awq-w4a16
cmd=${1:?stage DIR | run | stack}

if [ "$cmd" = stage ]; then
  mkdir -p "$STAGE"
  cp -r "$2"/* "$STAGE"/
  echo "staged: $(ls "$STAGE" | tr '\n' ' ')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  exit 0
fi

install() {
  expected=$(cat "$STAGE/parts.txt")
  have=$(ls "$STAGE" | grep -c '^part-' || true)
  if [ "$have" != "$expected" ]; then
    echo "only $have of $expected parts staged (the machine went cold?)"; exit 3
  fi
  mkdir -p /tmp/payload /tmp/site /tmp/models "$OUT"
  if [ ! -d /tmp/site/vllm ]; then  # a re-run on the same machine skips the install
    cat "$STAGE"/part-* | tar -xf - -C /tmp/payload
    (cd /tmp/payload && sha256sum -c payload.sha256 --quiet)
    for tree in /tmp/payload/vllm-trim.tar.*; do tar -xaf "$tree" -C /tmp/site; done
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
      /tmp/payload/deps/*.whl 2>&1 | grep -v "already exists" || true
    tar -xf /tmp/payload/model.tar -C /tmp/models
    rm -rf /tmp/payload
  fi
  if [ -n "${EXTRA:-}" ]; then  # optional wheels staged under extra/, e.g. EXTRA="nvtx-*"
    for w in $EXTRA; do python3 -m pip install -q --no-index --no-deps --no-compile \
      --target /tmp/site --upgrade "$STAGE"/extra/$w.whl 2>&1 | tail -2; done
  fi
}

t0=$(date +%s)
if [ -f "$STAGE/src.tar" ]; then tar -xf "$STAGE/src.tar"; fi
install
echo "installed in $(( $(date +%s) - t0 )) s"
# vLLM 0.26 imports flashinfer for its sampler on CUDA unless told not to; it is not carried.
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1
export VLLM_USE_FLASHINFER_SAMPLER=0 PYTHONUNBUFFERED=1
python3 -c "import torch, vllm; print('vllm', vllm.__version__, 'torch', torch.__version__, torch.cuda.get_device_name())"

if [ "$cmd" = stack ]; then
  # Byte-compile once (--no-compile install): every engine process imports vLLM.
  [ -f /tmp/site/.compiled ] || { python3 -m compileall -q -j 0 /tmp/site >/dev/null 2>&1 || true; touch /tmp/site/.compiled; }
  echo "compiled after $(( $(date +%s) - t0 )) s"
  csv=data/banking77/train.csv
  python3 -m load.bench_gpu_stack --pool-config deploy/gpu/pool-h200-stack.yaml \
    --tokenizer "$MODEL" --csv "$csv" --budget-s "${BUDGET_S:-420}" ${KEEP_POOL:+--keep-pool} \
    --label "H200, vLLM 0.26.0, SmolLM2-135M AWQ W4A16, 2 engines + gateway + load" \
    --out "$OUT/gpu-h200-stack.json" ${STACK_ARGS:-} > "$OUT/stack.log" 2>&1 || rc=$?
  tail -c 6000 "$OUT/stack.log"
  for f in /tmp/pool/logs/*.log; do
    if [ -f "$f" ]; then tail -c 2000000 "$f" > "$OUT/$(basename "$f")"; fi
  done
  for f in /tmp/pool4/logs/*.log; do  # the four-engine pool (pool-h200-stack4.yaml)
    if [ -f "$f" ]; then tail -c 2000000 "$f" > "$OUT/pool4-$(basename "$f")"; fi
  done
  exit "${rc:-0}"
fi

rm -rf /tmp/pool
python3 -m engine.pool_cli --config deploy/gpu/pool-h100.yaml > "$OUT/pool.log" 2>&1 &
pool=$!
for _ in $(seq 1 420); do
  if python3 -c "
import json,sys; d=json.load(open('/tmp/pool/engines.json')); sys.exit(0 if d['backends'] else 1)" 2>/dev/null; then break; fi
  if ! kill -0 $pool 2>/dev/null; then echo "pool exited"; tail -50 "$OUT/pool.log"; tail -80 /tmp/pool/logs/*.log; exit 4; fi
  sleep 1
done
echo "engine ready after $(( $(date +%s) - t0 )) s (install included)"
cp /tmp/pool/engines.json "$OUT/" || true
python3 load/bench_engine.py --url http://127.0.0.1:8000 --model smollm2-135m-instruct \
  --concurrency 1,32 --requests-per-stream 4 --max-tokens 128 \
  --label "H100, vLLM 0.26.0, SmolLM2-135M AWQ W4A16" --out "$OUT/bench-awq.json" || true
python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/metrics').read().decode())" | grep -E "^vllm:(prefix_cache|num_requests|kv_cache_usage|generation_tokens_total)" > "$OUT/metrics.txt" || true
kill -TERM $pool; wait $pool || true
grep -E "quantiz|Using .*(kernel|backend)|Marlin|Machete|compressed|CUDA graph|torch.compile|Memory profiling|KV cache" /tmp/pool/logs/*.log | head -40 || true
cp /tmp/pool/logs/*.log "$OUT/" || true
