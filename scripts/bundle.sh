#!/usr/bin/env bash
# Builds hypura with llama.cpp's backends as modules (the dynamic-backends feature) and puts
# into DIR what it needs to run anywhere on this OS: the `hypura` binary, llama.cpp's shared
# libraries and one module per CPU family. ggml loads the best module for the machine at
# start; the binary finds the libraries in its own folder (rpath $ORIGIN), and ggml its
# modules there. A GPU backend module built from the same llama.cpp (issue 12) goes there
# too. Debug information is stripped.
#   scripts/bundle.sh DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
[ $# -eq 1 ] || { say "usage: scripts/bundle.sh DIR"; exit 2; }
dest=$1
need_tools strip:binutils
cd "$HYPURA_ROOT"
# A target folder of its own: the feature rebuilds llama.cpp (14 CPU variants: about 12
# minutes on 2 cores).
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HYPURA_ROOT/target/dynamic}
cargo build --release --locked -p hypura-cli --features dynamic-backends
# llama-cpp-sys-2's build output: the newest one holding both the libraries and the modules.
out=$(ls -dt "$CARGO_TARGET_DIR"/release/build/llama-cpp-sys-2-*/out 2>/dev/null \
    | while read -r d; do [ -d "$d/lib" ] && [ -d "$d/backends" ] && echo "$d" && break; done)
[ -n "$out" ] || { say "no llama.cpp build output under $CARGO_TARGET_DIR"; exit 1; }
mkdir -p "$dest"
cp "$CARGO_TARGET_DIR/release/hypura" "$dest/"
cp -P "$out"/lib/lib*.so* "$dest/"
cp "$out"/backends/*.so "$dest/"
for f in "$dest/hypura" "$dest"/*.so*; do
    [ -L "$f" ] || strip --strip-debug "$f"
done
say "bundled into $dest: $(cd "$dest" && ls | tr '\n' ' ')"
