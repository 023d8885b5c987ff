#!/usr/bin/env bash
# The main job: generate text from a real model (Gemma 3 270M) with tiering on: a RAM budget
# of 25% of its weights, the rest streamed from disk. Installs what is missing first.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need_tools
fetch_models
cd "$HYPURA_ROOT"
cargo build --release --locked -p hypura-cli
MODEL="$MODELS_DIR/gemma-3-270m-q4_k_m.gguf"
BUDGET="${HYPURA_DEMO_BUDGET:-25%}"
echo "== plan (header only) ==" >&2
./target/release/hypura plan --model "$MODEL" --weights-budget "$BUDGET" --disk-gbps 1.6 >&2
echo "== run ==" >&2
./target/release/hypura run --model "$MODEL" --weights-budget "$BUDGET" --disk-gbps 1.6 \
    --prompt "${HYPURA_DEMO_PROMPT:-Once upon a time, a little fox}" --max-tokens 48 --temp 0 \
    --stats-json "${HYPURA_DEMO_STATS:-/tmp/hypura-demo-stats.json}"
echo "statistics: ${HYPURA_DEMO_STATS:-/tmp/hypura-demo-stats.json}" >&2
