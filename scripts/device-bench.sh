#!/usr/bin/env bash
# Runs on the lent GPU machine (no Rust there): uses a hypura binary built elsewhere
# (default .device/hypura; build with `cargo build --release -p hypura-cli` and strip it).
# Generates synthetic models, measures the disk, and benchmarks stock llama.cpp vs hypura in
# memory-capped cgroups, CPU compute. Prints tables; writes JSON under $OUT (or /tmp).
#   scripts/device-bench.sh [io|ab|ab-moe|ab-moe-io|tp-70b|tp-moe|tp-70b-ceiling|tp-moe-ceiling|tp-70b-prompt|tp-moe-prompt|verify|7b|13b|fits|70b|moe|moe10|moe-cold|qwen30b-cold|moe-fits|shift|moe-token|qwen30b|moe-whole|moe-ceiling|all] ...
#   (several may be given; M7=<file> measures the disk on that file instead of a 7B model)
# MoE cases run hypura without a saved expert profile (--no-expert-profile), except
# moe-cold and qwen30b-cold: a first run with another prompt saves one, then stock and hypura
# start cold (page cache dropped) and the time to the 16th token is compared, with where it
# went (load, prompt and the bytes the prompt read). Each MoE case ends with
# `hypura expert-sim` on hypura's run: the routing's spread and reuse, and hit rates of
# Belady, LRU and hypura's policy at the run's capacity.
# io: hypura's reader against one sequential reader (`hypura read-rate`, 4 and 8 threads, into
#     fresh pages and reused ones), and the criterion `io` benchmark when .device/io-bench
#     exists (built with `cargo bench -p hypura-benches --no-run`, copied and stripped).
# ab: hypura alone under the 7B/2 GiB cap, once with each binary given in $AB_BINS (to compare
#     builds on one machine), same cgroup set-up as `hypura bench`.
# ab-moe: the same with $M7 an MoE under a 16 GiB cap, sampled at temperature 1 (seed 42).
# tp-70b, tp-moe: aggregate decode rate of `run --parallel N` (Llama-70B shape under 32 GiB,
#     Mixtral shape under 16 GiB): hypura (--memory = the cap, or $TP_MEM; its resident weights
#     repacked unless TP_NO_REPACK=1) at each of $TP_N sequences, stock llama.cpp (mmap, which
#     cannot repack under the cap) at each of $TP_STOCK_N, each run in a fresh capped cgroup;
#     $TP_HYPURA_FLAGS are added to hypura's runs (e.g. --no-expert-profile); with $TP_BINS,
#     hypura's runs are made with each of those binaries in turn (to compare builds).
# tp-70b-ceiling, tp-moe-ceiling: the same shapes uncapped with every weight resident
#     (--weights-budget 100%): the CPU's compute ceiling for $TP_N sequences.
# tp-70b-prompt, tp-moe-prompt: time to first token of a 512-token prompt, one sequence under
#     the cap, hypura (with $TP_HYPURA_FLAGS, e.g. "-b 1024": one pass over the streamed weights
#     for the prompt instead of five) and (with TP_PROMPT_STOCK=1) stock (TP_PROMPT_STOCK=only:
#     stock alone).
# verify: the cost of checking the model file while streaming: hypura alone under the 7B/2 GiB
#     cap, alternately with the checks (default) and with --no-verify-reads, $VERIFY_ROUNDS each.
set -euo pipefail
H=${HYPURA_BIN:-.device/hypura}
W=${HYPURA_WORK:-/tmp/hypura-bench}
OUT=${OUT:-/tmp}
THREADS=${THREADS:-16}
TOKENS=${TOKENS:-8}
ROUNDS=${ROUNDS:-2}
WHAT=("${@:-all}")
mkdir -p "$W"
echo "== machine: $(date -u +%F) $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), $(ldd --version | head -1)"
lscpu | grep -m1 'Model name' || true
nvidia-smi -L 2>/dev/null || true

synth() { # shape type [tag [more synth flags...]]
    local f="$W/$1-$2${3:+-$3}.gguf"
    [ -f "$f" ] || "$H" synth --shape "$1" --type "$2" --out "$f" "${@:4}" >&2
    echo "$f"
}

sim_report() { # bench json: expert-sim on hypura's (first) run
    python3 -c "import json,sys; r=[x for x in json.load(open(sys.argv[1]))['runs'] if not x['baseline']][0]['stats']; json.dump(r, open(sys.argv[2], 'w')); print('hypura run: expert hits %d misses %d, read ahead %.2f GiB (%d slices used, %.2f GiB wasted), background reader %.2f GiB, predicted hit rate from profile: %s' % (r['expert_hits'], r['expert_misses'], r['expert_prefetch_bytes']/2**30, r['expert_prefetch_hits'], r['expert_prefetch_wasted_bytes']/2**30, r['expert_filled_bytes']/2**30, r['expert_profile_hit_rate']))" "$1" "$W/sim-stats.json"
    "$H" expert-sim --stats "$W/sim-stats.json"
}

export XDG_CACHE_HOME=$W/cache

cold_report() { # bench json: where each side's time to the 16th token went, and the floor
    python3 - "$1" "$GBPS" <<'PY'
import json, sys
gbps = float(sys.argv[2])
for run in json.load(open(sys.argv[1]))["runs"]:
    s = run["stats"]
    side = "stock " if run["baseline"] else "hypura"
    floor = s["prompt_bytes_read"] / (gbps * 1e9)
    print(f"{side}: 16th token {s['time_to_16th_token_s']:.1f} s = load {s['load_s']:.1f} s + prompt "
          f"{s['prompt_s']:.1f} s ({s['prompt_tokens']} tokens, read {s['prompt_bytes_read'] / 2**30:.2f} GiB: "
          f"{floor:.1f} s at dd's rate) + 15 steps")
PY
}

cold_case() { # model cap weights-budget name: a profile saved by an earlier session (another
    # prompt), then stock and hypura both start cold
    "$H" run --model "$1" --weights-budget "$3" --prompt "Once upon a time in a small village" \
        --max-tokens 64 --temp 1 --seed 7 --ignore-eos --threads "$THREADS" --no-repack \
        --disk-gbps "$GBPS" 2>&1 >/dev/null | grep 'profile' || true
    run_bench "$1" "$2" "$4" "$3" --temp 1 --seed 42
    sim_report "$OUT/bench-$4.json"
    cold_report "$OUT/bench-$4.json"
}

disk() { # file: reads it whole, or its first $DD_COUNT blocks of 4 MiB
    sync; echo 3 > /proc/sys/vm/drop_caches
    local t0 t1 bytes
    bytes=$(stat -c %s "$1")
    if [ -n "${DD_COUNT:-}" ]; then bytes=$((DD_COUNT * 4194304 < bytes ? DD_COUNT * 4194304 : bytes)); fi
    t0=$(date +%s.%N)
    dd if="$1" of=/dev/null bs=4M iflag=direct status=none ${DD_COUNT:+count=$DD_COUNT}
    t1=$(date +%s.%N)
    awk -v b="$bytes" -v a="$t0" -v z="$t1" 'BEGIN { printf "%.2f", b / (z - a) / 1e9 }'
}

M7=${M7:-$(synth llama-7b q4_0)}
GBPS=$(disk "$M7")
echo "== disk: sequential O_DIRECT read of $(basename "$M7") with dd bs=4M: $GBPS GB/s"

run_bench() { # model cap name [weights budget [more hypura bench flags...]]
    echo "== bench $(basename "$1") under a $2 cap${4:+, hypura weights budget $4}"
    "$H" bench --model "$1" --memory "$2" ${4:+--weights-budget "$4"} --cgroup --threads "$THREADS" \
        --tokens "$TOKENS" --rounds "$ROUNDS" --disk-gbps "$GBPS" --json "$OUT/bench-$3.json" "${@:5}"
}

fresh_cgroup() { # name cap: page cache dropped, an empty cgroup with memory.max = cap; prints its path
    local root=${CGROUP_ROOT:-/sys/fs/cgroup}
    local cg=$root/$1-$$
    sync; echo 3 > /proc/sys/vm/drop_caches
    echo +memory > "$root/cgroup.subtree_control" 2>/dev/null || true
    rmdir "$cg" 2>/dev/null || true
    mkdir "$cg"; echo "$2" > "$cg/memory.max"; echo 0 > "$cg/memory.swap.max"
    echo "$cg"
}

capped_run() { # binary cap weights-budget [hypura run flags...]: one hypura run in a fresh capped cgroup
    local cg stats=$W/ab-stats.json
    cg=$(fresh_cgroup hypura-ab "$2")
    (echo $BASHPID > "$cg/cgroup.procs"; exec "$1" run --model "$M7" --prompt "The history of the city begins" \
        --max-tokens "$TOKENS" --temp "${TEMP:-0}" ${SEED:+--seed $SEED} --ignore-eos --threads "$THREADS" --ctx 256 --no-repack \
        --weights-budget "$3" --disk-gbps "$GBPS" --stats-json "$stats" ${IO_THREADS:+--io-threads $IO_THREADS} "${@:4}" >/dev/null 2>"$W/ab-stderr") \
        || { echo "run failed: $(tail -1 "$W/ab-stderr")"; rmdir "$cg"; return; }
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('%-22s decode %.3f tok/s  read/token %.2f GiB  stream wait %.1f s  readers busy %.0f%%  peak RSS %.2f GiB  cgroup peak %.2f GiB' % (sys.argv[2], d['decode_tok_s'], d['disk_bytes_per_token']/2**30, d['stream_wait_s'], 100*d.get('reader_utilization', float('nan')), d['peak_rss_bytes']/2**30, int(open(sys.argv[3]).read())/2**30))" \
        "$stats" "$(basename "$1")${IO_THREADS:+ io=$IO_THREADS}${4:+ $4}" "$cg/memory.peak"
    cp "$stats" "$OUT/ab-$(basename "$(dirname "$1")")-$(date +%s%N).json" 2>/dev/null || true
    if [ -n "${RESULTS:-}" ]; then
        python3 -c "import json,sys; print(sys.argv[2], json.load(open(sys.argv[1]))['decode_tok_s'])" "$stats" "${RESULT_TAG:-${4:-verify}}" >> "$RESULTS"
    fi
    rmdir "$cg"
}

parallel_run() { # model cap sequences tokens [hypura run flags...]: one `run --parallel` in a fresh capped cgroup
    local cg stats=$W/tp-stats.json
    cg=$(fresh_cgroup hypura-tp "$2")
    (echo $BASHPID > "$cg/cgroup.procs"; exec "${BIN:-$H}" run --model "$1" --prompt "${TP_PROMPT:-The history of the city begins}" \
        --max-tokens "$4" --temp 1 --seed 42 --ignore-eos --threads "$THREADS" --ctx "${TP_CTX:-256}" \
        $(case " ${*:5} " in *" --baseline "*) echo --no-repack;; *) echo ${TP_NO_REPACK:+--no-repack};; esac) \
        --parallel "$3" --disk-gbps "$GBPS" --stats-json "$stats" "${@:5}" >/dev/null 2>"$W/tp-stderr") \
        || { echo "run failed: $(tail -1 "$W/tp-stderr")"; rmdir "$cg"; return; }
    cp "$stats" "$OUT/tp-$(basename "$1" .gguf)-$3${5:+$5}${TAG:+-$TAG}.json" 2>/dev/null || true
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); m=d.get('model_stats', {}); print('| %s | %d | %d | %.3f | %.3f | %.1f (%d tokens) | %.2f GiB | %.2f GiB | %.1f s, readers %.0f%% | %.2f GiB | %.1f |' % (sys.argv[2], d.get('sequences', 1), d['tokens_generated'], d['decode_tok_s'], d['steady_tok_s'], d.get('time_to_first_token_s', d['prompt_s']), d.get('prompt_tokens', 0), d['disk_bytes_per_token']/2**30, d['streamed_bytes_per_token']/2**30, m.get('stream_wait_s', 0), 100 * m.get('reader_busy_s', 0) / max(1, m.get('reader_threads', 1)) / max(1e-9, m.get('decode_s', 1)), int(open(sys.argv[3]).read())/2**30, d['load_s']))" \
        "$stats" "${LABEL:+$LABEL }$(case " ${*:5} " in *" --baseline "*) echo stock;; *) echo hypura;; esac)" "$cg/memory.peak"
    rmdir "$cg"
}

tp_header() {
    echo "| mode | sequences | tokens | aggregate decode tok/s | steady (2nd half) | all first tokens s | read per token | planned per step | stream wait, readers busy | cgroup peak | load s |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
}

ceiling() { # model: every weight resident, uncapped, at each of $TP_N sequences
    echo "== $(basename "$1") uncapped, every weight resident (--weights-budget 100%), run --parallel N"
    tp_header
    for n in ${TP_N-1 4 16}; do parallel_run "$1" max "$n" "$TOKENS" --weights-budget 100%; done
}

# A prompt of 529 tokens in the synthetic models' generated vocabulary (the table gives the count).
PROMPT_512=$(python3 -c "print(' '.join(['The history of the city begins with a small village by the river, where farmers and fishermen traded grain and salt.'] * 8))")

prompt_ttft() { # model cap: one sequence with a 512-token prompt, hypura (and stock with TP_PROMPT_STOCK=1)
    echo "== $(basename "$1") under a $2 cap: time to first token of a long prompt, one sequence"
    tp_header
    # shellcheck disable=SC2086
    if [ "${TP_PROMPT_STOCK:-}" != only ]; then
        TP_PROMPT=$PROMPT_512 TP_CTX=1024 parallel_run "$1" "$2" 1 2 --memory "${TP_MEM:-$2}" ${TP_HYPURA_FLAGS:-}
    fi
    if [ -n "${TP_PROMPT_STOCK:-}" ]; then
        TP_PROMPT=$PROMPT_512 TP_CTX=1024 parallel_run "$1" "$2" 1 2 --baseline
    fi
}

throughput() { # model cap: hypura at each of $TP_N sequences ($TOKENS each), stock at each of $TP_STOCK_N ($STOCK_TOKENS each)
    echo "== $(basename "$1") under a $2 cap, run --parallel N (sampled, temperature 1, seed 42 + i), hypura --memory ${TP_MEM:-$2}"
    tp_header
    for n in ${TP_N-1 4 16}; do
        for bin in ${TP_BINS:-$H}; do
            BIN=$bin LABEL=${TP_BINS:+$bin} TAG=${TP_BINS:+$(basename "$(dirname "$bin")")} parallel_run "$1" "$2" "$n" "$TOKENS" --memory "${TP_MEM:-$2}" ${TP_HYPURA_FLAGS:-}
        done
    done
    for n in ${TP_STOCK_N:-}; do parallel_run "$1" "$2" "$n" "${STOCK_TOKENS:-$TOKENS}" --baseline; done
}

# Weights budgets: the cap minus ~230 MiB measured for everything else (process, vocabulary,
# KV cache and activations actually touched, page cache in transit) at --ctx 256.
for what in "${WHAT[@]}"; do
case "$what" in
    io)
        for threads in 4 8; do
            for fresh in "" --fresh-pages; do
                echo "== reader: $("$H" read-rate --file "$M7" --limit 2G --threads "$threads" $fresh)"
            done
        done
        if [ -x .device/io-bench ]; then
            HYPURA_BENCH_FILE="$M7" HYPURA_BENCH_LIMIT_MB=${IO_LIMIT_MB:-1024} .device/io-bench --bench 2>&1 \
                | grep -v '^Benchmarking\|^Warning\|^$'
        fi
        ;;
    ab)
        echo "== hypura alone, 7B under a 2 GiB cap, weights budget ${W7:-1.78G}, $TOKENS tokens"
        for round in 1 2; do
            for bin in ${AB_BINS:-$H}; do capped_run "$bin" 2G "${W7:-1.78G}"; done
        done
        ;;
    ab-moe) # hypura alone on $M7 (an MoE) under a 16 GiB cap, sampled, once with each of $AB_BINS per round
        echo "== hypura alone, $(basename "$M7") under a 16 GiB cap, weights budget 15.5G, $TOKENS tokens, temperature 1"
        for round in $(seq "$ROUNDS"); do
            for bin in ${AB_BINS:-$H}; do TEMP=1 SEED=42 capped_run "$bin" 16G 15.5G --no-expert-profile; done
        done
        ;;
    tp-70b) throughput "$(synth llama-70b q4_0)" 32G ;;
    tp-moe) throughput "$(synth mixtral-8x7b q4_0)" 16G ;;
    # Near-uniform routing (the default synthetic router sends nearly every token to the same
    # few experts, so the model acts as if it fit).
    tp-moe-token) throughput "$(synth mixtral-8x7b q4_0 token --routing token)" 16G ;;
    tp-moe-token-prompt) prompt_ttft "$(synth mixtral-8x7b q4_0 token --routing token)" 16G ;;
    tp-70b-ceiling) ceiling "$(synth llama-70b q4_0)" ;;
    tp-moe-ceiling) ceiling "$(synth mixtral-8x7b q4_0)" ;;
    tp-70b-prompt) prompt_ttft "$(synth llama-70b q4_0)" 32G ;;
    tp-moe-prompt) prompt_ttft "$(synth mixtral-8x7b q4_0)" 16G ;;
    ab-moe-io) # hypura alone on $M7 (an MoE) under a 16 GiB cap, once with each reader count in $IO_LIST per round
        echo "== hypura alone, $(basename "$M7") under a 16 GiB cap, weights budget 15.5G, $TOKENS tokens, temperature 1, readers ${IO_LIST:-4 8}"
        for round in $(seq "$ROUNDS"); do
            for io in ${IO_LIST:-4 8}; do IO_THREADS=$io TEMP=1 SEED=42 capped_run "$H" 16G 15.5G --no-expert-profile; done
        done
        ;;
    verify)
        echo "== the file checks' cost: hypura alone, 7B under a 2 GiB cap, weights budget ${W7:-1.78G}, $TOKENS tokens"
        RESULTS=$W/verify-results; : > "$RESULTS"
        for round in $(seq "${VERIFY_ROUNDS:-3}"); do
            capped_run "$H" 2G "${W7:-1.78G}"
            capped_run "$H" 2G "${W7:-1.78G}" --no-verify-reads
            # An earlier build, without any checks, for comparison.
            if [ -n "${OLD_BIN:-}" ]; then RESULT_TAG=old capped_run "$OLD_BIN" 2G "${W7:-1.78G}"; fi
        done
        python3 - "$RESULTS" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    mode, tok_s = line.split()
    runs.setdefault(mode, []).append(float(tok_s))
on, off = statistics.median(runs["verify"]), statistics.median(runs["--no-verify-reads"])
print(f"checks on: median {on:.3f} tok/s {sorted(runs['verify'])}; off: median {off:.3f} tok/s {sorted(runs['--no-verify-reads'])}; cost {100 * (1 - on / off):.1f}% of decode speed")
if "old" in runs:
    old = statistics.median(runs["old"])
    print(f"earlier build: median {old:.3f} tok/s {sorted(runs['old'])}; this build with checks at {on / old:.3f}x it")
PY
        unset RESULTS
        ;;
    7b) run_bench "$M7" 2G 7b-2g "${W7:-1.78G}" ;;
    13b) run_bench "$(synth llama-13b q4_0)" 4G 13b-4g 3.75G ;;
    fits) run_bench "$M7" 12G 7b-12g ;;
    70b) run_bench "$(synth llama-70b q4_0)" 16G 70b-16g 15.5G ;;
    # Sampled, not greedy: greedy decoding of a random model repeats one token, and so routes
    # the same experts every token.
    moe) run_bench "$(synth mixtral-8x7b q4_0)" 16G moe-16g 15.5G --temp 1 --seed 42 \
        --hypura-flag=--no-expert-profile; sim_report "$OUT/bench-moe-16g.json" ;;
    moe-cold) cold_case "$(synth mixtral-8x7b q4_0)" 16G 15.5G moe-16g-profile ;;
    qwen30b-cold) cold_case "$(synth qwen3-30b-a3b q4_0 "" --arch qwen3moe)" 8G 7.5G qwen30b-8g-profile ;;
    moe-fits) # the whole model fits the cap: both read it once, cold
        run_bench "$(synth mixtral-8x7b q4_0)" 40G moe-fits "" --temp 1 --seed 42 \
            --hypura-flag=--no-expert-profile
        cold_report "$OUT/bench-moe-fits.json" ;;
    shift) # reading expert slices: O_DIRECT in place (shift 0) vs through the bounce buffer
        for round in 1 2 3; do
            for shift in 0 32; do
                echo "== fresh pages, shift $shift: $("$H" read-rate --file "$M7" --limit 2G --threads 4 --fresh-pages --shift "$shift")"
            done
        done ;;
    moe-token) run_bench "$(synth mixtral-8x7b q4_0 token --routing token)" 16G moe-token-16g 15.5G \
        --temp 1 --seed 42 --hypura-flag=--no-expert-profile; sim_report "$OUT/bench-moe-token-16g.json" ;;
    qwen30b) run_bench "$(synth qwen3-30b-a3b q4_0 "" --arch qwen3moe)" 8G qwen30b-8g 7.5G \
        --temp 1 --seed 42 --hypura-flag=--no-expert-profile; sim_report "$OUT/bench-qwen30b-8g.json" ;;
    moe-ceiling) # both in RAM, uncapped: the CPU compute ceiling of the moe case
        M=$(synth mixtral-8x7b q4_0)
        for mode in --baseline "--weights-budget 100%"; do
            "$H" run --model "$M" $mode --no-repack --no-expert-profile --prompt "The history of the city begins" \
                --max-tokens "$TOKENS" --temp 1 --seed 42 --threads "$THREADS" --ignore-eos \
                --stats-json "$OUT/ceiling.json" >/dev/null 2>&1
            python3 -c "import json; s = json.load(open('$OUT/ceiling.json')); print('uncapped $mode:', round(s['decode_tok_s'], 3), 'tok/s decode,', round(s['steady_tok_s'], 3), 'steady (2nd half),', round(s['prompt_s'], 2), 's prompt')"
        done ;;
    moe10) run_bench "$(synth mixtral-8x7b q4_0)" 10G moe-10g 9.5G --temp 1 --seed 42 \
        --hypura-flag=--no-expert-profile; sim_report "$OUT/bench-moe-10g.json" ;;
    moe-whole) run_bench "$(synth mixtral-8x7b q4_0)" 16G moe-16g-whole 15.5G --temp 1 --seed 42 \
        --hypura-flag=--no-expert-slices ;;
    all)
        run_bench "$M7" 2G 7b-2g 1.78G
        run_bench "$(synth llama-13b q4_0)" 4G 13b-4g 3.75G
        run_bench "$M7" 12G 7b-12g
        ;;
    *) echo "unknown: $what (io|ab|ab-moe|ab-moe-io|tp-70b|tp-moe|tp-70b-ceiling|tp-moe-ceiling|tp-70b-prompt|tp-moe-prompt|verify|7b|13b|fits|70b|moe|moe10|moe-cold|qwen30b-cold|moe-fits|shift|moe-token|qwen30b|moe-whole|moe-ceiling|all)" >&2; exit 2 ;;
esac
done
