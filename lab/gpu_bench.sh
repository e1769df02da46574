#!/usr/bin/env bash
# The bench tables on one GPU, split so that each part fits one 10-minute device call.
# Usage on the GPU machine, from the repo root:  OUT=/some/dir PART=a|b|c|d|e|p|n|h|t bash lab/gpu_bench.sh
# (p: the step profile; n: ra-norec's SDPA route calibrated; h: the eager rows, this code against
# AB_SRC; t: the test suite on the GPU)
# Every part has sdpa in it, so each table's ratios come from its own run.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src
OUT=${OUT:-results/bench/raw}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/card.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/card.txt"
case "${PART:-a}" in
  a) # attention rows: every attention, every SDPA backend, T=1024/2048/4096 (B*T = 8192) (~4 min, unmeasured)
     python3 -m rabench bench --seq-lens 1024,2048,4096 --no-steps --out "$OUT/bench-attention.json" ;;
  e) # eager steps, every attention, T=1024 (~3 min)
     python3 -m rabench bench --no-attention --compile no --step-seq-lens 1024 --out "$OUT/bench-eager.json" ;;
  b) # compiled steps (CUDA graphs), T=1024, the flagship and the faster-by-design variants (~5 min)
     python3 -m rabench bench --no-attention --compile yes --step-seq-lens 1024 \
       --attn sdpa,ra-triton,ra-folded,ra-local,ra-layers,ra-anneal --out "$OUT/bench-compiled-a.json" ;;
  c) # compiled steps, T=1024, the rest, with ra-triton for their ratio to full RA (~6 min)
     python3 -m rabench bench --no-attention --compile yes --step-seq-lens 1024 \
       --attn sdpa,ra-triton,ra-amortized,ra-lowrank,ra-budget,std-gated --out "$OUT/bench-compiled-b.json" ;;
  d) # compiled steps at longer T (B*T = 8192 tokens) (~5 min)
     python3 -m rabench bench --no-attention --compile yes --step-seq-lens 2048,4096 \
       --attn sdpa,ra-triton,ra-folded --out "$OUT/bench-compiled-long.json" ;;
  p) # where RA's compiled step time goes: profiles of sdpa, ra-norec and ra-triton under CUDA graphs (~3 min)
     python3 benchmarks/step_profile.py --attn sdpa,ra-norec,ra-triton --modes reduce-overhead \
       --profile sdpa:reduce-overhead,ra-norec:reduce-overhead,ra-triton:reduce-overhead --out "$OUT/steps.json" ;;
  n) # ra-norec's folded route (SDPA at D, its query map in the projection) against sdpa and ra-triton: calibration (~3 min)
     python3 -m rabench suite lab/norec-folded.toml --out "$OUT/norec-folded" --calibrate-only --no-progress ;;
  h) # the eager attention rows (host-inclusive) at this checkout and at another commit's src/, one
     # after the other on one machine (~2 min): AB_SRC=.ab/src, made here with
     # `mkdir -p .ab && git archive b354b52 src | tar x -C .ab` and carried (.ab is git-ignored)
     python3 -m rabench bench --no-steps --seq-lens 1024 --attn sdpa,ra-triton --out "$OUT/eager-head.json"
     PYTHONPATH=${AB_SRC:?AB_SRC= the src/ of another commit, carried} python3 -m rabench bench --no-steps \
       --seq-lens 1024 --attn sdpa,ra-triton --out "$OUT/eager-ab.json" ;;
  t) # the whole test suite on this GPU, SHARDS pytest processes at once (default 8: the slow tests are
     # CPU-bound subprocess runs; 16 cores here; SHARD_TIMEOUT, default 540 s, bounds each shard). RABENCH_TEST_SHARD=k/n (lab/pytest_shard.py) deals the
     # collected tests out one by one, so each file's slow tests spread over the shards: dealt out by
     # whole files, one shard (deadline, parallel, variants) ran past 540 s on an H100.
     # TESTS_FROM=file: only the test ids listed there, one a line (parameters dropped: the whole
     # function runs), e.g. the not-run.txt of a call that ran out of time.  PYTEST_K: pytest's -k.
     n=${SHARDS:-8}
     targets=(tests lab)
     [ -n "${TESTS_FROM:-}" ] && mapfile -t targets < <(sed 's/\[.*//' "$TESTS_FROM" | sort -u)
     # -v names each test as it ends, so a shard cut by its timeout still says what ran: not-run.txt
     # (collected minus named) is the TESTS_FROM of the call that finishes the job.
     PYTHONPATH=src:lab python3 -m pytest --collect-only -q -p no:cacheprovider ${PYTEST_K:+-k "$PYTEST_K"} \
       "${targets[@]}" 2>/dev/null \
       | grep '::' | LC_ALL=C sort -u > "$OUT/collected.txt"
     # each shard gets its share of the cores for PyTorch's CPU threads (default: all cores in every
     # shard, n x 16 threads on 16 cores, which slows the CPU-bound tests down)
     threads=${SHARD_THREADS:-$(( $(nproc) / n > 0 ? $(nproc) / n : 1 ))}
     for k in $(seq 0 $((n - 1))); do
       (OMP_NUM_THREADS=$threads RABENCH_TEST_SHARD=$k/$n PYTHONPATH=src:lab timeout ${SHARD_TIMEOUT:-540} python3 -m pytest -p pytest_shard -v -rfE -p no:cacheprovider ${PYTEST_K:+-k "$PYTEST_K"} "${targets[@]}" \
          > "$OUT/pytest-shard-$k.log" 2>&1; echo "exit $?" >> "$OUT/pytest-shard-$k.log") &
     done
     wait
     # one file back instead of one per shard (a device call returns at most 8 files)
     for f in "$OUT"/pytest-shard-*.log; do echo "==> $(basename "$f")"; cat "$f"; done > "$OUT/pytest.log"
     rm -f "$OUT"/pytest-shard-*.log
     # a test id may hold spaces (its parameters): strip the outcome
     # (and a skip its reason) and percentage from the end; LC_ALL=C: one sort order for comm
     sed -nE 's/^((tests|lab)\/[^ ]+::.+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)( \(.*\))?( +\[ *[0-9]+%\])?$/\1/p' \
       "$OUT/pytest.log" | LC_ALL=C sort -u \
       | comm -23 "$OUT/collected.txt" - > "$OUT/not-run.txt"
     echo "collected $(wc -l < "$OUT/collected.txt"), not run $(wc -l < "$OUT/not-run.txt")"
     grep -E "^==>|passed|failed|exit |^FAILED|^ERROR" "$OUT/pytest.log" ;;
esac
