#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, fetches the test models, builds the
# workspace, then `cargo test` of every crate (unit tests, end-to-end tests on the real models,
# the C API's error paths, the C and Python examples, the C one under valgrind, and
# scripts/install-c.sh into a scratch prefix).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# The C API tests compile the C example (pkg-config) and run it under valgrind; the install
# test (crates/hypura-ffi/tests/install.rs) strips and inspects the installed libraries
# (binutils) and builds against them with clang modules.
need_tools pkg-config:pkg-config valgrind:valgrind clang:clang readelf:binutils strip:binutils
fetch_models
cd "$HYPURA_ROOT"
export HYPURA_MODELS_DIR="$MODELS_DIR"
# libhypura.so/.a and the hypura binary must exist before the C and Python example tests.
cargo build --release --workspace --locked
log=$(mktemp)
status=0
cargo test --release --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole workspace (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$status"
