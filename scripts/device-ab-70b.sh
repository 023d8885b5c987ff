#!/usr/bin/env bash
# One call on the lent machine (CPU compute): this tree's bundle (.device/bundle) against an
# older hypura binary built against the same libraries (.device/old/hypura), side by side:
# the Llama-70B shape under a 32 GiB cap at $AB_N sequences (default "16 1"; the older binary
# at the first count only), then the 7B shape under 2 GiB (`device-bench.sh ab`).
#   carry [".device/bundle", ".device/old"]; scripts/device-ab-70b.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rm -rf /tmp/newb /tmp/oldb
cp -rP .device/bundle /tmp/newb
cp -rP .device/bundle /tmp/oldb
cp .device/old/hypura /tmp/oldb/hypura
export HYPURA_WORK=/tmp/hypura-bench OUT=${OUT:-/tmp}
mkdir -p "$HYPURA_WORK"
m70=$HYPURA_WORK/llama-70b-q4_0.gguf
[ -f "$m70" ] || /tmp/newb/hypura synth --shape llama-70b --type q4_0 --out "$m70" >/dev/null 2>&1
set -- ${AB_N:-16 1}
first=$1
shift
HYPURA_BIN=/tmp/newb/hypura M7=$m70 DD_COUNT=1024 TP_N=$first TP_BINS="/tmp/newb/hypura /tmp/oldb/hypura" \
    TOKENS=${TOKENS:-8} TP_MEM=32G bash scripts/device-bench.sh tp-70b
for n in "$@"; do
    HYPURA_BIN=/tmp/newb/hypura M7=$m70 DD_COUNT=1024 TP_N=$n TOKENS=${TOKENS:-8} TP_MEM=32G \
        bash scripts/device-bench.sh tp-70b
done
if [ -z "${AB_SKIP_7B:-}" ]; then
    rm -f "$m70"
    HYPURA_BIN=/tmp/newb/hypura AB_BINS="/tmp/newb/hypura /tmp/oldb/hypura" bash scripts/device-bench.sh ab
fi
