#!/usr/bin/env bash
# One device call that checks a branch's kernel work on the GPU before it merges, with main's
# src/ beside it on the same card.  From the root of a main checkout:
#   mkdir -p .ab/br && git archive BRANCH | tar x -C .ab/br --exclude=results   # here; carry .ab
#   OUT=$OUT bash lab/branch_check.sh                                            # there
# In .ab/br (the branch's tree), with main's lab scripts: its GPU tests (gpu_bench.sh PART=t in
# TEST_SHARDS processes, default 6; PYTEST_K= narrows them), the eager attention rows at the
# branch and at main's src/ one after the other (gpu_bench.sh PART=h), and
# benchmarks/backward_modes.py at T = 1024.  TEST_S (each shard), H_S, BM_S bound each part in
# seconds (BM_S=0 skips the last).  Everything lands under $OUT; the summary goes to stdout.
set -u
BR=${BR:-.ab/br}
MAIN_SRC=$(pwd)/src
LAB=$(pwd)/lab  # main's lab scripts, run in the branch's tree
cd "$BR" || exit 2
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,uuid,driver_version --format=csv,noheader | tee "$OUT/card.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/card.txt"

t0=$(date +%s)
# The tests through gpu_bench.sh's PART=t: TEST_SHARDS pytest processes side by side. On a cold
# Triton cache the tests are mostly compilation, which is CPU work; one process reached 17 of 27
# tests in 245 s (results/bench/h100-2026-12-07g/).  Its not-run.txt names what a bound cut off.
mkdir -p "$OUT/t"
targets=$(mktemp)
printf '%s\n' tests/test_gpu.py tests/test_kernel_launch.py > "$targets"
TESTS_FROM="$targets" SHARDS=${TEST_SHARDS:-6} SHARD_TIMEOUT=${TEST_S:-240} PART=t OUT="$OUT/t" \
  bash "$LAB/gpu_bench.sh"
rm -f "$targets"
echo "[tests] $(( $(date +%s) - t0 )) s: $(grep -c " PASSED" "$OUT/t/pytest.log") passed," \
  "$(grep -c " FAILED" "$OUT/t/pytest.log") failed, $(grep -c " SKIPPED" "$OUT/t/pytest.log") skipped"

t0=$(date +%s)
mkdir -p "$OUT/h"
PART=h AB_SRC="$MAIN_SRC" OUT="$OUT/h" timeout "${H_S:-200}" bash "$LAB/gpu_bench.sh" > "$OUT/h/log.txt" 2>&1
echo "[eager rows: the branch, then main] exit $? in $(( $(date +%s) - t0 )) s"
grep -E "^(attention|sdpa |ra-triton)" "$OUT/h/log.txt"

[ "${BM_S:-240}" = 0 ] && exit 0
t0=$(date +%s)
mkdir -p "$OUT/bm"
OUT="$OUT/bm" PYTHONPATH=src timeout "${BM_S:-240}" python3 benchmarks/backward_modes.py --lengths 1024 \
  > "$OUT/bm/log.txt" 2>&1
echo "[backward modes] exit $? in $(( $(date +%s) - t0 )) s"
grep -E "^\||^\[autotune|^\[time|prewarm\] [0-9]" "$OUT/bm/log.txt" | tail -n 40
