#!/usr/bin/env bash
# One device call of a suite plan (lab/batches/*.toml) on the GPUs of one machine: prepare the data
# once (kept in /tmp), run or resume the plan's suite with `--deadline` (a run starts only if it can
# finish in the call; runs still going then checkpoint and stop), and copy the suite folder without
# checkpoints to $OUT as <batch>.tgz, the batch being the plan's file name. Re-run the same command
# to continue: on the warm machine it resumes the checkpointed runs; on a fresh one FROM (a
# committed copy of the folder, e.g. results/english/lr-english-1) is copied in first.
#
#   OUT=$OUT PLAN=lab/batches/lr-english-1.toml ROOT=/tmp/rabench-english \
#     DATA_SOURCES=.device-data/english-mix.jsonl.xz FROM=results/english/lr-english-1 \
#     SUITE_FLAGS=--reuse-calibration bash lab/plan_call.sh
set -u
source "$(dirname "$0")/call_env.sh"  # the call's clock (left), SRC, ROOT, DATA, prepare_data
PLAN=${PLAN:?PLAN= the suite plan, e.g. lab/batches/lr-english-1.toml}
BATCH=$(basename "$PLAN" .toml)
DEVICES=${DEVICES:-0}
SUITE=$ROOT/$BATCH
LOG=$SUITE/suite-log.txt
if [ -n "${FROM:-}" ] && [ ! -f "$SUITE/suite.json" ]; then mkdir -p "$ROOT" && cp -r "$FROM" "$SUITE"; fi
mkdir -p "$SUITE"

prepare_data | tee -a "$LOG"
record_cards "$SUITE"
t=$(left)
echo "[call] $(date -u +%H:%M:%S) suite $PLAN for at most ${t}s" | tee -a "$LOG"
# shellcheck disable=SC2086  # SUITE_FLAGS is a word list
timeout -s TERM -k 40 $(( t + 30 )) python3 -m rabench suite "$PLAN" --out "$SUITE" --data "$DATA" \
    --devices "$DEVICES" --deadline "${t}s" --no-progress ${SUITE_FLAGS:-} >> "$LOG" 2>&1
rc=$?
hint=""; [ "$rc" = 124 ] && hint=" (out of time: resume with the same command)"
echo "[call] $(date -u +%H:%M:%S) suite exit $rc$hint" | tee -a "$LOG"
pack_to_out "$BATCH"
tail -n 12 "$LOG"
