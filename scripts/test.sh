#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, fetches the test models, then
# `cargo test` of every crate (unit tests, and end-to-end tests on the real models).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need_tools
fetch_models
cd "$HYPURA_ROOT"
export HYPURA_MODELS_DIR="$MODELS_DIR"
cargo test --release --workspace --locked "$@"
