#!/usr/bin/env bash
# One device call's share of a single `rabench train` run that may outlive the call: the
# campaign's data (prepared once, shared with campaign_call.sh), the run under a timeout that
# leaves time for its SIGTERM checkpoint, `--resume` when the folder already holds one, and the
# run folder without checkpoints copied to $OUT as <GROUP>.tgz (lab/campaign_unpack.sh
# reads it). Re-run the same command on the warm machine to continue.
#
#   OUT=/some/dir NAME=ra-triton-isotime-s0 GROUP=reruns \
#       ARGS="--attn ra-triton --seed 0 --iters 18139" bash lab/train_call.sh
#
# It runs beside campaign_call.sh on a spare GPU (CUDA_VISIBLE_DEVICES=3): both prepare the data
# through call_env.sh's lock, so the corpus is tokenized once.
set -u
source "$(dirname "$0")/call_env.sh"  # the call's clock (left), PRESET, COMPILE, SRC, ROOT, DATA, prepare_data
GROUP=${GROUP:-reruns}
NAME=${NAME:?NAME= the run folder name}
ARGS=${ARGS:?ARGS= the rabench train arguments besides --data, --out and the shared settings}
RUN=$ROOT/$GROUP/$NAME
mkdir -p "$ROOT/$GROUP"

prepare_data
resume=()
[ -f "$RUN/config.json" ] && resume=(--resume)
limit=$(left)
echo "[train_call] $(date -u +%H:%M:%S) $NAME for at most ${limit}s ${resume[*]}"
# shellcheck disable=SC2086  # ARGS and COMPILE are word lists
timeout -s TERM -k 40 "$limit" python3 -m rabench train --data "$DATA" --out "$RUN" --preset "$PRESET" $ARGS $COMPILE \
    --eval-every "${EVAL_EVERY:-1000}" --no-progress "${resume[@]}" > "$RUN.log" 2>&1
rc=$?
if [ -d "$RUN" ]; then cat "$RUN.log" >> "$RUN/train.log"; fi  # the run's own log travels with its folder
tail -n 3 "$RUN.log"
echo "[train_call] $(date -u +%H:%M:%S) exit $rc$([ "$rc" = 124 ] && echo ' (out of time: run the same command to resume)')"
pack_to_out "$GROUP"
