#!/usr/bin/env bash
# One device call of the campaign (issue 14) on a 4-GPU machine: prepare the data once (kept in /tmp),
# run the batch's suite with `--deadline` (a run starts only if it can finish before the call ends;
# runs still going then checkpoint and stop), and copy the batch folder without checkpoints to $OUT
# as campaign-<batch>.tgz. Re-run the same command to continue: on the same warm machine it resumes
# the checkpointed runs; on a fresh machine (the last one went back) unpack the tgz into $ROOT
# first (UNPACK=path/to/campaign-<batch>.tgz) and it re-runs only the runs that did not finish.
#
#   OUT=/some/dir BATCH=batch-1 bash lab/campaign_call.sh
#
# Stages, in order (a stage starts only when the one before it has finished every run):
#   1. the main comparison: sdpa and ra-triton (N and N/s iterations), SEEDS, N = ITERS;
#   2. the same folder with the controls EXTRA added (iso-iteration runs only: the iso-time runs
#      stay ra-triton's), paired with stage 1's sdpa runs by seed.
# STAGES=1 runs both as one queue (the suite's order, main runs first by seed): use it when the
# main runs are done or nearly so, since a GPU that finishes stage 1 early otherwise waits.
# Needs .device-data/{english-mix,kernel-c}.jsonl.xz (copies of ../shared/corpus, carried).
set -u
source "$(dirname "$0")/call_env.sh"  # the call's clock (left), PRESET, COMPILE, SRC, ROOT, DATA, prepare_data
BATCH=${BATCH:-batch-1}
ITERS=${ITERS:-8000}
SEEDS=${SEEDS:-0,1,2,3,4,5}
EXTRA=${EXTRA-ra-norec,std-gated}  # EXTRA= (empty): no controls
DEVICES=${DEVICES:-0,1,2,3}
# DEADLINE=0: no --deadline, for runs longer than one call (a 20,000-iteration run): each call
# checkpoints what is in flight and the next call, issued at once on the warm machine, resumes it.
CAND=${CAND:-ra-triton}          # the candidate with iso-time runs
ISOTIME=${ISOTIME:-$CAND}        # --isotime-attn: none leaves CAND's iso-time runs out (N-iteration runs only)
ISOITER=${ISOITER:-}             # --isoiter-attn: e.g. none (CAND judged at equal time alone: question 5's variants)
SUITE_FLAGS=${SUITE_FLAGS:-}     # more suite flags, e.g. --reuse-calibration (a batch extended on another machine)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
SUITE=$ROOT/$BATCH
mkdir -p "$SUITE"
LOG=$SUITE/suite-log.txt
if [ -n "${UNPACK:-}" ] && [ ! -f "$SUITE/suite.json" ]; then tar xzf "$UNPACK" -C "$ROOT"; fi

prepare_data | tee -a "$LOG"
record_cards "$SUITE"

suite() {  # suite ATTNS: run or resume the batch with these attentions until the deadline
    local t; t=$(left)
    [ "$t" -gt 30 ] || return 124
    echo "[call] $(date -u +%H:%M:%S) suite --attn $1 for at most ${t}s" | tee -a "$LOG"
    local stop=(--deadline "${t}s") limit=$(( t + 30 )) iso=()
    [ -n "$ISOITER" ] && iso=(--isoiter-attn "$ISOITER")
    if [ "${DEADLINE:-1}" = 0 ]; then stop=(); limit=$t; fi  # runs longer than a call: resume on the warm machine
    timeout -s TERM -k 40 "$limit" python3 -m rabench suite "${stop[@]}" --out "$SUITE" --data "$DATA" --preset "$PRESET" --attn "$1" \
        --isotime-attn "$ISOTIME" "${iso[@]}" --iters "$ITERS" --seeds "$SEEDS" $COMPILE \
        --eval-every ${EVAL_EVERY:-500} --devices "$DEVICES" --no-progress $SUITE_FLAGS >> "$LOG" 2>&1
}  # exit 124: the deadline left runs to do (timeout, a backstop 30 s later, also exits 124)
if [ "${STAGES:-2}" = 1 ] || [ -z "$EXTRA" ]; then
    suite "sdpa,$CAND${EXTRA:+,$EXTRA}"   # STAGES=1: one queue, no GPU idles at the end of stage 1
else
    suite "sdpa,$CAND" && suite "sdpa,$CAND,$EXTRA"
fi
rc=$?
hint=""; [ "$rc" = 124 ] && hint=" (out of time: resume with the same command)"
echo "[call] $(date -u +%H:%M:%S) suite exit $rc$hint" | tee -a "$LOG"

pack_to_out "$BATCH" "campaign-$BATCH.tgz"
tail -n 12 "$LOG"
