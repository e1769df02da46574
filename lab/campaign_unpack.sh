#!/usr/bin/env bash
# Commit-ready copy of a campaign batch from the campaign-<batch>.tgz that
# lab/campaign_call.sh leaves in $OUT: the batch's calibration, card list, suite log and
# plan, and each run folder's config, metrics, summary and log (no checkpoints, no per-batch
# report: `rabench report results/campaign` makes one over every batch).
#
#   bash lab/campaign_unpack.sh path/to/campaign-horizon-2.tgz [results/campaign]
set -eu
TGZ=$1
DEST=${2:-results/campaign}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
tar xzf "$TGZ" -C "$TMP"
for batch in "$TMP"/*/; do
    name=$(basename "$batch")
    mkdir -p "$DEST/$name"
    for f in calibration.json calibration.log cards.txt suite-log.txt suite.json; do
        if [ -f "$batch/$f" ]; then cp "$batch/$f" "$DEST/$name/"; fi
    done
    for run in "$batch"*/; do
        [ -f "$run/config.json" ] || continue
        mkdir -p "$DEST/$name/$(basename "$run")"
        for f in config.json metrics.jsonl summary.json train.log; do
            if [ -f "$run/$f" ]; then cp "$run/$f" "$DEST/$name/$(basename "$run")/"; fi
        done
    done
    echo "$DEST/$name: $(find "$DEST/$name" -name summary.json | wc -l) run(s) with a summary"
done
