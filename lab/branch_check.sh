#!/usr/bin/env bash
# One device call that checks a branch's kernel work on the GPU before it merges, with main's
# src/ beside it on the same card.  From the root of a main checkout:
#   mkdir -p .ab/br && git archive BRANCH | tar x -C .ab/br --exclude=results   # here; carry .ab
#   OUT=$OUT bash lab/branch_check.sh                                            # there
# In .ab/br (the branch's tree): its GPU tests (PYTEST_K= narrows them), the eager attention rows
# at the branch and at main's src/ one after the other (gpu_bench.sh PART=h), and
# benchmarks/backward_modes.py at T = 1024.  TEST_S, H_S, BM_S bound each part in seconds
# (BM_S=0 skips the last).  Everything lands under $OUT; the summary goes to stdout.
set -u
BR=${BR:-.ab/br}
MAIN_SRC=$(pwd)/src
cd "$BR" || exit 2
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,uuid,driver_version --format=csv,noheader | tee "$OUT/card.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/card.txt"

t0=$(date +%s)
# -v: each test's outcome is in the log as it ends, so a run cut by the bound still says which
# tests passed and which failed (the -rfE summary comes only at the end)
PYTHONPATH=src:lab timeout "${TEST_S:-240}" python3 -m pytest -v -p no:cacheprovider -rfE \
  ${PYTEST_K:+-k "$PYTEST_K"} tests/test_gpu.py tests/test_kernel_launch.py > "$OUT/gpu-tests.log" 2>&1
echo "[tests] exit $? in $(( $(date +%s) - t0 )) s: $(grep -c " PASSED" "$OUT/gpu-tests.log") passed"
tail -n 3 "$OUT/gpu-tests.log"; grep -E " (FAILED|ERROR)|^(FAILED|ERROR)" "$OUT/gpu-tests.log" | head -n 20

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
