#!/usr/bin/env bash
# Prints a markdown table of hypura vs stock llama.cpp on the test models, CPU only, on this
# machine: tokens/s, bytes read per token (measured vs planned), peak RSS, the bound.
# Usage: scripts/measure-cpu.sh [TOKENS]   (run scripts/test.sh or demo.sh first for models)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$HYPURA_ROOT"
cargo build --release --locked -q -p hypura-cli
TOKENS=${1:-32}
THREADS=${HYPURA_THREADS:-$(nproc)}
out=$(mktemp -d)
for model in SmolLM2-135M-Instruct.Q4_1.gguf gemma-3-270m-q4_k_m.gguf; do
    for cfg in "baseline:--baseline" "100%:--weights-budget 100%" "50%:--weights-budget 50%" "25%:--weights-budget 25%" "10%:--weights-budget 10%"; do
        name=${cfg%%:*}; args=${cfg#*:}
        # shellcheck disable=SC2086
        ./target/release/hypura run --model "$MODELS_DIR/$model" $args --prompt "The capital of France is" \
            --max-tokens "$TOKENS" --temp 0 --ignore-eos --threads "$THREADS" --ctx 512 \
            --stats-json "$out/$model.$name.json" >/dev/null 2>"$out/err" || { cat "$out/err"; exit 1; }
    done
done
python3 - "$out" <<'PY'
import glob, json, os, sys
rows = []
print("| model | mode | budget | decode tok/s | read/token (measured) | planned | peak RSS | bound tok/s | same tokens as stock |")
print("|---|---|---|---|---|---|---|---|---|")
for model in ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"]:
    base = json.load(open(os.path.join(sys.argv[1], f"{model}.baseline.json")))
    for name in ["baseline", "100%", "50%", "25%", "10%"]:
        s = json.load(open(os.path.join(sys.argv[1], f"{model}.{name}.json")))
        mib = lambda b: f"{b / 2**20:.1f} MiB"
        print(f"| {model.split('.')[0]} | {s['mode']} | {name} | {s['decode_tok_s']:.2f} | {mib(s['disk_bytes_per_token'])} | "
              f"{mib(s['streamed_bytes_per_token'])} | {mib(s['peak_rss_bytes'])} | "
              f"{'-' if s['mode'] == 'stock' else format(s['bound_tok_s'], '.2f')} | {'yes' if s['tokens'] == base['tokens'] else 'no'} |")
PY
rm -rf "$out"
