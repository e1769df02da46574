#!/usr/bin/env bash
# One device call that checks a branch's kernel work on the GPU before it merges, with main's
# src/ beside it on the same card.  From the root of a main checkout:
#   mkdir -p .ab/br && git archive BRANCH | tar x -C .ab/br --exclude=results   # here; carry .ab
#   OUT=$OUT bash lab/branch_check.sh                                            # there
# In .ab/br (the branch's tree): its GPU tests (TEST_SHARDS processes, default 6; PYTEST_K=
# narrows them), the eager attention rows at the branch and at main's src/ one after the other
# (gpu_bench.sh PART=h), and benchmarks/backward_modes.py at T = 1024.  TEST_S, H_S, BM_S bound
# each part in seconds (BM_S=0 skips the last).  Everything lands under $OUT; the summary goes
# to stdout.
set -u
BR=${BR:-.ab/br}
MAIN_SRC=$(pwd)/src
cd "$BR" || exit 2
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,uuid,driver_version --format=csv,noheader | tee "$OUT/card.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/card.txt"

t0=$(date +%s)
# TEST_SHARDS pytest processes side by side (lab/pytest_shard.py deals the tests out one by one):
# on a cold Triton cache the tests are mostly compilation, which is CPU work; one process reached
# 17 of 27 tests in 245 s (results/bench/h100-2026-12-07g/).  -v: each test's outcome is in the
# log as it ends, so a shard cut by the bound still says which tests passed and which failed.
n=${TEST_SHARDS:-6}
threads=$(( $(nproc) / n > 0 ? $(nproc) / n : 1 ))
for k in $(seq 0 $((n - 1))); do
  (OMP_NUM_THREADS=$threads RABENCH_TEST_SHARD=$k/$n PYTHONPATH=src:lab timeout "${TEST_S:-240}" \
     python3 -m pytest -p pytest_shard -v -p no:cacheprovider -rfE ${PYTEST_K:+-k "$PYTEST_K"} \
     tests/test_gpu.py tests/test_kernel_launch.py > "$OUT/gpu-tests-$k.log" 2>&1
   echo "exit $?" >> "$OUT/gpu-tests-$k.log") &
done
wait
for f in "$OUT"/gpu-tests-*.log; do echo "==> $(basename "$f")"; cat "$f"; done > "$OUT/gpu-tests.log"
rm -f "$OUT"/gpu-tests-*.log
echo "[tests] $n shards in $(( $(date +%s) - t0 )) s: $(grep -c " PASSED" "$OUT/gpu-tests.log") passed," \
  "$(grep -c " FAILED" "$OUT/gpu-tests.log") failed, $(grep -c " SKIPPED" "$OUT/gpu-tests.log") skipped;" \
  "shard exits: $(grep -E '^exit ' "$OUT/gpu-tests.log" | cut -d' ' -f2 | tr '\n' ' ')"
grep -E " (FAILED|ERROR)|^(FAILED|ERROR)" "$OUT/gpu-tests.log" | head -n 20

t0=$(date +%s)
mkdir -p "$OUT/h"
PART=h AB_SRC="$MAIN_SRC" OUT="$OUT/h" timeout "${H_S:-200}" bash lab/gpu_bench.sh > "$OUT/h/log.txt" 2>&1
echo "[eager rows: the branch, then main] exit $? in $(( $(date +%s) - t0 )) s"
grep -E "^(attention|sdpa |ra-triton)" "$OUT/h/log.txt"

[ "${BM_S:-240}" = 0 ] && exit 0
t0=$(date +%s)
mkdir -p "$OUT/bm"
OUT="$OUT/bm" PYTHONPATH=src timeout "${BM_S:-240}" python3 benchmarks/backward_modes.py --lengths 1024 \
  > "$OUT/bm/log.txt" 2>&1
echo "[backward modes] exit $? in $(( $(date +%s) - t0 )) s"
grep -E "^\||^\[autotune|^\[time|prewarm\] [0-9]" "$OUT/bm/log.txt" | tail -n 40
