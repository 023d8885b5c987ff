#!/usr/bin/env bash
# Prepares, on this machine, what scripts/device-gpu.sh needs on the lent GPU machine (which
# has no Rust), within the 64 MiB a call may carry:
#   .device/bundle  the dynamic-backends build (scripts/bundle.sh) with only the CPU modules
#                   for the lent machine's CPUs (sapphirerapids) and the x86-64 fallback;
#   .device/ggml    ggml's sources from the pinned llama-cpp-sys-2 (the GPU backend's, CUDA
#                   unless GPU=vulkan, and what it builds on), for building its module there.
#   scripts/device-gpu-prepare.sh        then run scripts/device-gpu.sh with carry
#   [".device/bundle", ".device/ggml", ".device/gpu-module"] (the last: a CUDA module built on an
#   earlier call, see device-gpu.sh)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$HYPURA_ROOT"
bash scripts/bundle.sh .device/bundle
for m in .device/bundle/libggml-cpu-*.so; do
    case $m in *-sapphirerapids.so|*-x64.so) ;; *) rm -f "$m" ;; esac
done
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-0.1.161/llama.cpp/ggml | head -1)
[ -d "$src" ] || { say "no llama-cpp-sys-2 0.1.161 source in cargo's registry: build hypura once"; exit 1; }
rm -rf .device/ggml
mkdir -p .device/ggml/src
cp -r "$src/CMakeLists.txt" "$src/cmake" "$src/include" .device/ggml/
# ggml's core files and build script, the CPU backend (ggml's CMake expects it) and the GPU's.
find "$src/src" -maxdepth 1 -type f -exec cp {} .device/ggml/src/ \;
cp -r "$src/src/ggml-cpu" "$src/src/ggml-${GPU:-cuda}" .device/ggml/src/
# ggml built on its own writes a pkg-config file from this template, which the crate does not
# package (llama.cpp's build includes ggml as a subfolder and never needs it): an empty one.
touch .device/ggml/ggml.pc.in
say "prepared .device: $(du -sh .device | cut -f1) ($(du -sh .device/bundle | cut -f1) bundle, $(du -sh .device/ggml | cut -f1) ggml sources)"
