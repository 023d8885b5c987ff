#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, fetches the test models, then
# `cargo test` of every crate (unit tests, and end-to-end tests on the real models).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need_tools
fetch_models
cd "$HYPURA_ROOT"
export HYPURA_MODELS_DIR="$MODELS_DIR"
log=$(mktemp)
status=0
cargo test --release --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole workspace (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$status"
