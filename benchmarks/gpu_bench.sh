#!/usr/bin/env bash
# One device call: kernel check at GPT-2 shapes, GPU equivalence test, the bench tables, an ncu look.
# Usage on the GPU machine, from the repo root:  OUT=/some/dir bash benchmarks/gpu_bench.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src
OUT=${OUT:-results/bench/raw}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/card.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/card.txt"
python3 benchmarks/kernel_gpu_check.py --quick 2>&1 | tail -40 | tee "$OUT/kernel_check.txt"
python3 -m pytest -q tests/test_equivalence.py 2>&1 | tail -5 | tee "$OUT/equivalence.txt"
python3 -m rabench bench --compile no --out "$OUT/bench-eager.json" 2>&1 | grep -v '^\[bench\]'
python3 -m rabench bench --attn sdpa,std-gated,ra-folded,ra-triton,ra-local,ra-lowrank,ra-anneal,ra-layers --compile yes \
    --out "$OUT/bench-compiled.json" 2>&1 | grep -v '^\[bench\]'
