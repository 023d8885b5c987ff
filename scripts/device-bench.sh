#!/usr/bin/env bash
# Runs on the lent GPU machine (no Rust there): uses a hypura binary built elsewhere
# (default .device/hypura; build with `cargo build --release -p hypura-cli` and strip it).
# Generates synthetic models, measures the disk, and benchmarks stock llama.cpp vs hypura in
# memory-capped cgroups, CPU compute. Prints tables; writes JSON under $OUT (or /tmp).
#   scripts/device-bench.sh [7b|13b|fits|moe|all]
set -euo pipefail
H=${HYPURA_BIN:-.device/hypura}
W=${HYPURA_WORK:-/tmp/hypura-bench}
OUT=${OUT:-/tmp}
THREADS=${THREADS:-16}
TOKENS=${TOKENS:-8}
ROUNDS=${ROUNDS:-2}
WHAT=${1:-all}
mkdir -p "$W"
echo "== machine: $(date -u +%F) $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), $(ldd --version | head -1)"
lscpu | grep -m1 'Model name' || true
nvidia-smi -L 2>/dev/null || true

synth() { # shape type
    local f="$W/$1-$2.gguf"
    [ -f "$f" ] || "$H" synth --shape "$1" --type "$2" --out "$f" >&2
    echo "$f"
}

disk() { # file
    sync; echo 3 > /proc/sys/vm/drop_caches
    local t0 t1 bytes
    bytes=$(stat -c %s "$1")
    t0=$(date +%s.%N)
    dd if="$1" of=/dev/null bs=4M iflag=direct status=none
    t1=$(date +%s.%N)
    awk -v b="$bytes" -v a="$t0" -v z="$t1" 'BEGIN { printf "%.2f", b / (z - a) / 1e9 }'
}

M7=$(synth llama-7b q4_0)
GBPS=$(disk "$M7")
echo "== disk: sequential O_DIRECT read of $(basename "$M7") with dd bs=4M: $GBPS GB/s"

run_bench() { # model cap name [weights budget]
    echo "== bench $(basename "$1") under a $2 cap${4:+, hypura weights budget $4}"
    "$H" bench --model "$1" --ram-budget "$2" ${4:+--weights-budget "$4"} --cgroup --threads "$THREADS" \
        --tokens "$TOKENS" --rounds "$ROUNDS" --disk-gbps "$GBPS" --json "$OUT/bench-$3.json"
}

# Weights budgets: the cap minus ~230 MiB measured for everything else (process, vocabulary,
# KV cache and activations actually touched, page cache in transit) at --ctx 256.
echo "== reader: $("$H" read-rate --file "$M7" --limit 2G)"

case "$WHAT" in
    7b) run_bench "$M7" 2G 7b-2g "${W7:-1.78G}" ;;
    13b) run_bench "$(synth llama-13b q4_0)" 4G 13b-4g 3.75G ;;
    fits) run_bench "$M7" 12G 7b-12g ;;
    moe) run_bench "$(synth mixtral-8x7b q4_0)" 16G moe-16g 15.5G ;;
    all)
        run_bench "$M7" 2G 7b-2g 1.78G
        run_bench "$(synth llama-13b q4_0)" 4G 13b-4g 3.75G
        run_bench "$M7" 12G 7b-12g
        ;;
esac
