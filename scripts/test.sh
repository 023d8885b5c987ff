#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, fetches the test models and the Python
# clients the server is tested with, builds the workspace, then `cargo test` of every crate
# (unit tests, end-to-end tests on the real models, the C API's error paths, the C and Python
# examples, the C one under valgrind, and scripts/install-c.sh into a scratch prefix).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# The C API tests compile the C example (pkg-config) and run it under valgrind; the install
# test (crates/hypura-ffi/tests/install.rs) strips and inspects the installed libraries
# (binutils) and builds against them with clang modules.
need_tools pkg-config:pkg-config valgrind:valgrind clang:clang readelf:binutils strip:binutils
fetch_models
cd "$HYPURA_ROOT"
# The official OpenAI and Ollama Python clients, pinned, for the server's tests
# (crates/hypura-cli/tests/serve.rs looks in target/python-clients). `pip --target` needs no
# virtual environment, and works beside a system Python that refuses installs (PEP 668).
PYTHON_CLIENTS="$HYPURA_ROOT/target/python-clients"
if ! PYTHONPATH="$PYTHON_CLIENTS" python3 -c 'import sys, importlib.metadata as m
sys.exit(m.version("openai") != "3.57.0" or m.version("ollama") != "0.6.3")' 2>/dev/null; then
    say "installing the Python clients openai 3.57.0 and ollama 0.6.3 into $PYTHON_CLIENTS"
    python3 -m pip install --quiet --disable-pip-version-check --upgrade \
        --target "$PYTHON_CLIENTS" openai==3.57.0 ollama==0.6.3 >&2
fi
fetch_chat_templates "$HYPURA_ROOT/target/chat-templates"
export HYPURA_MODELS_DIR="$MODELS_DIR"
# libhypura.so/.a and the hypura binary must exist before the C and Python example tests.
cargo build --release --workspace --locked
log=$(mktemp)
status=0
# One test at a time: the tests start model runs whose llama.cpp threads spin while they wait,
# and two runs sharing two cores slow each other down many times over (the families test took
# 328 s with two at a time, 160 s with one).
RUST_TEST_THREADS=${RUST_TEST_THREADS:-1} cargo test --release --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole workspace (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$status"
