#!/usr/bin/env bash
# The plan's short test, scaled to the device time a session has (issue 8), then compiled step timings.
# Needs .device-data/{english-mix,kernel-c}.jsonl.xz (copies of ../shared/corpus, carried with the call).
# Usage on the GPU machine:  OUT=/some/dir BUDGET=35s bash lab/gpu_short_test.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src
OUT=${OUT:-results/short-test/raw}; BUDGET=${BUDGET:-35s}; SUITE=/tmp/short-test
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/card.txt"
time python3 -m rabench prepare .device-data/english-mix.jsonl.xz .device-data/kernel-c.jsonl.xz \
    --out /tmp/data-mix --max-tokens 40000000 2>&1 | tail -2 | tee "$OUT/prepare.txt"
cp /tmp/data-mix/meta.json "$OUT/data-meta.json"
python3 -m rabench suite --out $SUITE --data /tmp/data-mix --time $BUDGET --seeds 0 \
    --attn sdpa,ra-triton,std-gated,open,ra-open --no-progress 2>&1 | grep -v '^wrote'
python3 -m rabench suite --out $SUITE --data /tmp/data-mix --time $BUDGET --seeds 1 \
    --attn sdpa,ra-triton --no-progress 2>&1 | grep -v '^wrote'
tar czf "$OUT/short-test-runs.tgz" --exclude='ckpt.pt*' -C /tmp short-test
timeout 150 python3 -m rabench bench --attn sdpa,ra-triton --compile yes --out "$OUT/bench-compiled.json" 2>&1 | grep -v '^\[bench\]'
