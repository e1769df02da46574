#!/usr/bin/env bash
# One 4-GPU device call (nvidia-h100-x4): the bench tables on GPUs 0-2 (parts of gpu_bench.sh, each
# part with sdpa in it so its ratios come from its own run), and on GPU 3 the integrated pipeline
# end to end on real data: a compiled iso-design suite (calibration, sdpa for N iterations,
# ra-triton for N and N/s) through --devices, then the whole test suite on a GPU machine.
# Usage from the repo root on the GPU machine: OUT=/some/dir bash lab/gpu_x4_validate.sh
# Needs .device-data/{english-mix,kernel-c}.jsonl.xz (copies of ../shared/corpus, carried).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
W=/tmp/x4; mkdir -p $W/bench $W/logs
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $W/card.txt
python3 -m rabench prepare .device-data/english-mix.jsonl.xz .device-data/kernel-c.jsonl.xz \
    --out /tmp/data-mix --max-tokens 40000000 2>&1 | tail -1 > $W/logs/prepare.txt
cp /tmp/data-mix/meta.json $W/data-meta.json
LIMIT=${LIMIT:-500}
bench() { CUDA_VISIBLE_DEVICES=$1 OUT=$W/bench PART=$2 bash lab/gpu_bench.sh > $W/logs/bench-$2.log 2>&1; }
( timeout $LIMIT bash -c "$(declare -f bench); W=$W; bench 0 b; bench 0 e" ) &
( timeout $LIMIT bash -c "$(declare -f bench); W=$W; bench 1 a; bench 1 d" ) &
( export CUDA_VISIBLE_DEVICES=2; timeout $LIMIT bash -c "OUT=$W/bench PART=c bash lab/gpu_bench.sh > $W/logs/bench-c.log 2>&1; \
    python3 -m pytest -q -x -p no:cacheprovider tests > $W/logs/pytest-gpu.log 2>&1; echo pytest exit \$? >> $W/logs/pytest-gpu.log" ) &
( export CUDA_VISIBLE_DEVICES=3; timeout $LIMIT python3 -m rabench suite --out $W/smoke --data /tmp/data-mix \
    --attn sdpa,ra-triton --iters 300 --seeds 0 --compile --compile-mode reduce-overhead --eval-every 50 \
    --eval-tokens 262144 --devices 0 --no-progress > $W/logs/smoke-suite.log 2>&1; echo suite exit $? >> $W/logs/smoke-suite.log ) &
wait
find $W/smoke -name 'ckpt.pt*' -delete 2>/dev/null
tar czf "$OUT/x4.tgz" -C /tmp x4
tail -n 3 $W/logs/*.log
