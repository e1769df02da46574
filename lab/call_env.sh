# Sourced by campaign_call.sh, plan_call.sh and train_call.sh: what one device call's scripts share. The call's
# clock (left: seconds still usable), the settings every run trains with, the code that trains,
# and the campaign's data, which prepare_data tokenizes once per machine under a lock, so a run
# beside a batch waits for it instead of tokenizing the corpus a second time.
START=$(date +%s)
CALL_S=${CALL_S:-590}          # the device call's limit, less a margin
PACK_S=${PACK_S:-60}           # kept back for the runs' checkpoints and the copy to $OUT
PRESET=${PRESET:-gpt2-124m}
COMPILE=${COMPILE---compile --compile-mode reduce-overhead}  # COMPILE= (empty) trains eager
DATA_SOURCES=${DATA_SOURCES:-.device-data/english-mix.jsonl.xz .device-data/kernel-c.jsonl.xz}
# SRC: the code that trains (default this checkout's src/). A batch resumed after the code has
# moved on runs with its own commit's src/, e.g. SRC=.b3/src (git archive COMMIT src | tar x -C .b3).
SRC=$(cd "${SRC:-src}" && pwd)  # absolute: the suite's workers may start elsewhere
export PYTHONUNBUFFERED=1 PYTHONPATH=$SRC
ROOT=${ROOT:-/tmp/rabench-campaign}
DATA=$ROOT-data

left() { echo $(( START + CALL_S - PACK_S - $(date +%s) )); }
prepare_data() {
    flock "$DATA.lock" bash -c "[ -f '$DATA/meta.json' ] || python3 -m rabench prepare $DATA_SOURCES --out '$DATA' 2>&1 | tail -2"
}
record_cards() {  # record_cards FOLDER: this call's GPUs appended to FOLDER/cards.txt, dated (a folder
    # extended on several machines keeps each call's card; the runs record their own machine_id)
    { echo "# call of $(date -u +%Y-%m-%dT%H:%M:%SZ)"
      nvidia-smi --query-gpu=index,name,uuid,memory.total,driver_version --format=csv 2>/dev/null; } >> "$1/cards.txt"
}
pack_to_out() {  # pack_to_out FOLDER [NAME.tgz]: $ROOT/FOLDER without checkpoints or locks, as $OUT/NAME.tgz
    tar czf "$OUT/${2:-$1.tgz}" --exclude='ckpt.pt*' --exclude=.lock -C "$ROOT" "$1"
}
