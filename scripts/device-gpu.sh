#!/usr/bin/env bash
# The GPU tier on the lent CUDA machine (issue 12). First run 2026-12-06 on an H100 (results
# in BENCHMARKS.md), in calls on one warm machine: `build check fits` (about 210 s, 170 of
# them building the CUDA module), then `moe` (160 s with MOE_NGL=10 MOE_CPU_MOE=23
# MOE_STOCK_TOKENS=24), then `13b` (430 s). Second day: `check` then `MOE_NGL=10
# MOE_CPU_MOE=23 MOE_STOCK_TOKENS=64 ... moe` in one call on a fresh machine, the module
# unpacked from the carry: 281 s; `MOE_ROUNDS=2 ... moe-split`: 145 s.
#
# Set-up here (the lent machine has no Rust): scripts/device-gpu-prepare.sh, then
#   run with carry [".device/bundle", ".device/ggml", ".device/gpu-module"]:
#   bash scripts/device-gpu.sh [build|check|fits|13b|moe|moe-split|all]...
#
# build: ggml's CUDA backend as a module (GGML_BACKEND_DL, sm_90) from the same vendored
#        source, put beside the bundle's libraries (checked to register by `check`).
#        GPU=vulkan builds the Vulkan module instead (a rehearsal on a machine without CUDA:
#        prepare with GPU=vulkan too, and run with GGML_VK_VISIBLE_DEVICES=0 on Mesa's
#        software device).
# check: greedy/seeded tokens of hypura's tiers against stock llama.cpp with the same
#        placement of compute (-ngl, --n-cpu-moe), dense and MoE, experts on the GPU too.
# fits:  the 7B shape wholly in GPU memory: hypura --gpu-budget all against stock -ngl 99.
# 13b:   13B shape, GPU budget 25% of the model, RAM cap 25% (cgroup): hypura against stock's
#        best -ngl (swept) under the same cap.
# moe:   Mixtral shape (near-uniform routing), 8 GiB GPU budget, 16 GiB RAM cap: hypura against
#        stock with hypura's placement of compute (-ngl 99 --n-cpu-moe N, --override-tensor for
#        single expert matrices), then stock's -ngl N ($MOE_NGL) and -ngl 99 --n-cpu-moe N
#        ($MOE_CPU_MOE) (swept; empty: none).
# moe-split: hypura alone on the same case at 8G and 7.5G of GPU budget, alternating (the
#        single expert matrices the budget's rest holds at 8G, against none).
# Steady state is over $TOKENS (>= 64) tokens; cold start is the time to the 16th token.
set -euo pipefail
B=${BUNDLE:-.device/bundle}
H=$B/hypura
SRC=${GGML_SRC:-.device/ggml}
GPU=${GPU:-cuda}
case $GPU in
    # CUDA graphs on, as llama.cpp's own build has them (ggml built alone defaults to off);
    # FlashAttention kernels off unless CUDA_FA=ON: they are most of the build's time, and
    # stock and hypura load the same module (llama.cpp then computes attention without them).
    cuda) GPU_FLAGS=(-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_GRAPHS=ON
                     "-DGGML_CUDA_FA=${CUDA_FA:-OFF}") ;;
    vulkan) GPU_FLAGS=(-DGGML_VULKAN=ON) ;;
    *) echo "GPU=$GPU: cuda or vulkan"; exit 2 ;;
esac
W=${HYPURA_WORK:-/tmp/hypura-gpu}
OUT=${OUT:-/tmp}
THREADS=${THREADS:-16}
TOKENS=${TOKENS:-64}
# stock under a RAM cap re-reads its mmap'd weights through a thrashing page cache: fewer tokens
STOCK_TOKENS=${STOCK_TOKENS:-16}
WHAT=("${@:-all}")
mkdir -p "$W"
export XDG_CACHE_HOME=$W/cache LD_LIBRARY_PATH=$B${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# CUDA's compiler and runtime where the image keeps them, if they are not on the paths.
if [ "$GPU" = cuda ] && ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH=/usr/local/cuda/bin:$PATH
fi
[ ! -d /usr/local/cuda/lib64 ] || export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64
echo "== machine: $(date -u +%F) $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
nvidia-smi -L || true
wants() { local w; for w in "${WHAT[@]}"; do [ "$w" = "$1" ] || [ "$w" = all ] && return 0; done; return 1; }

# The module is kept in $W/lib between calls on a warm machine (the bundle is replaced by each
# call's carry). A built one also comes back gzipped, in parts small enough for $OUT
# (libggml-cuda.so.gz.part-00, -01, ...): `cat` them here into $CARRIED (carry it), and a later
# call on a fresh machine unpacks it instead of building (170 s of device time on the H100).
CARRIED=${GPU_MODULE_DIR:-.device/gpu-module}/libggml-$GPU.so.gz
mkdir -p "$W/lib"
[ -f "$B/libggml-$GPU.so" ] || [ ! -f "$W/lib/libggml-$GPU.so" ] || cp "$W/lib/libggml-$GPU.so" "$B/"
if [ ! -f "$B/libggml-$GPU.so" ] && [ -f "$CARRIED" ] && ! wants build; then
    if gzip -dc "$CARRIED" > "$W/lib/libggml-$GPU.so"; then
        cp "$W/lib/libggml-$GPU.so" "$B/"
        echo "== unpacked the carried libggml-$GPU.so ($(du -h "$B/libggml-$GPU.so" | cut -f1))"
    else
        echo "== the carried $CARRIED does not unpack: building"
        rm -f "$W/lib/libggml-$GPU.so"
    fi
fi
if wants build || [ ! -f "$B/libggml-$GPU.so" ]; then
    t0=$(date +%s)
    gen=(); ! command -v ninja >/dev/null || gen=(-G Ninja)
    cmake -S "$SRC" -B "$W/cuda-build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
        -DGGML_BACKEND_DL=ON "${GPU_FLAGS[@]}" -DGGML_NATIVE=OFF \
        -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF >"$W/cmake.log" 2>&1 \
        || { tail -20 "$W/cmake.log"; exit 1; }
    cmake --build "$W/cuda-build" --target "ggml-$GPU" -j "$(nproc)" >"$W/build.log" 2>&1 \
        || { tail -30 "$W/build.log"; exit 1; }
    cp "$(find "$W/cuda-build" -name "libggml-$GPU.so" | head -1)" "$W/lib/"
    strip --strip-unneeded "$W/lib/libggml-$GPU.so" || true
    cp "$W/lib/libggml-$GPU.so" "$B/"
    echo "== built libggml-$GPU.so in $(( $(date +%s) - t0 )) s, $(du -h "$B/libggml-$GPU.so" | cut -f1)"
    ldd "$B/libggml-$GPU.so" | grep 'not found' || true
    if [ "$OUT" != /tmp ]; then
        gzip -9 -c "$B/libggml-$GPU.so" | split -b 15M -d - "$OUT/libggml-$GPU.so.gz.part-"
        echo "== in \$OUT: $(cd "$OUT" && ls libggml-"$GPU".so.gz.part-* | tr '\n' ' ')"
    fi
fi

synth() { # shape type [more synth flags...]
    local f="$W/$1-$2.gguf"
    [ -f "$f" ] || "$H" synth --shape "$1" --type "$2" --out "$f" "${@:3}" >&2
    echo "$f"
}
small() { # name [synth flags...]: the tests' small shape
    local f="$W/$1.gguf"
    [ -f "$f" ] || "$H" synth --out "$f" --n-layer 16 --n-embd 512 --n-ff 2048 --n-ff-exp 256 \
        --n-head 8 --n-head-kv 2 --n-vocab 1000 "${@:2}" >&2
    echo "$f"
}
text() { # model [run flags...]: the tokens' text, sampled at temperature 1, seed 42
    "$H" run --model "$1" --prompt "The capital of France is" --max-tokens 24 --temp 1 --seed 42 \
        --ignore-eos --ctx 256 --threads "$THREADS" --no-repack --disk-gbps 1.5 \
        --no-expert-profile "${@:2}" 2>"$W/stderr" | tr -d '\000' || { echo "FAILED: $(tail -1 "$W/stderr")"; }
}
same() { # label a b
    if [ "$2" = "$3" ]; then echo "same   $1"; else echo "DIFFER $1"; echo "  hypura: $2"; echo "  stock:  $3"; fi
}
# The GPU's buffer type, as stock's --override-tensor names it.
case $GPU in cuda) GPU_BUFT=${GPU_BUFT:-CUDA0} ;; vulkan) GPU_BUFT=${GPU_BUFT:-Vulkan0} ;; esac
gpu_layers() { # model gpu-budget [plan flags...]: llama.cpp's n_gpu_layers, the expert layers on
    # the GPU, and stock's --override-tensor for the single expert matrices there ("-" if none)
    "$H" plan --model "$1" --gpu-budget "$2" --ctx "${PLAN_CTX:-256}" --disk-gbps 1.5 --no-expert-profile \
        --json "${@:3}" \
        | python3 -c 'import json,sys; p=json.load(sys.stdin); t=p["gpu_expert_tensors"]; print(p["gpu_layers"] + 1, p["gpu_expert_layers"], ",".join("^%s$=%s" % (n.replace(".", "\\."), sys.argv[1]) for n in t) or "-")' "$GPU_BUFT"
}
ot_flags() { [ "$1" = - ] || echo "--override-tensor $1"; }

if wants check; then
    echo "== $(date -u +%T)"
    "$H" plan --model "$(small dense --type q4_0)" --gpu-budget 30% --weights-budget 30% \
        --disk-gbps 1.5 | grep -E 'GPU|streamed layers|LM head' || true
    grep -qi "GPU: $GPU" <("$H" run --model "$(small dense --type q4_0)" --prompt x --max-tokens 1 \
        --gpu-budget 30% --disk-gbps 1.5 -v 2>&1) && echo "== the $GPU module registered" \
        || echo "== NO $GPU DEVICE: check $B/libggml-$GPU.so"
    m=$(small dense --type q4_0)
    # What the GPU backend costs in host memory (hypura's plan assumes 512 MiB).
    for g in none 30%; do
        flags=(); [ $g = none ] || flags=(--gpu-budget $g)
        "$H" run --model "$m" --prompt x --max-tokens 4 --disk-gbps 1.5 --stats-json "$W/rss.json" \
            "${flags[@]}" >/dev/null 2>&1
        python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('== GPU budget %s: RSS before load %.0f MiB, after llama.cpp load %.0f MiB, peak %.0f MiB' % (sys.argv[2], d['rss_before_load_bytes']/2**20, d['rss_after_llama_load_bytes']/2**20, d['peak_rss_bytes']/2**20))" "$W/rss.json" $g
    done
    read -r ngl _ < <(gpu_layers "$m" 30% --weights-budget 30%)
    stock=$(text "$m" --baseline --ngl "$ngl")
    same "dense, GPU 30% + RAM 30% + disk vs -ngl $ngl" "$(text "$m" --gpu-budget 30% --weights-budget 30%)" "$stock"
    same "dense, GPU 30% + RAM vs -ngl $ngl" "$(text "$m" --gpu-budget 30%)" "$stock"
    m=$(small moe --arch qwen3moe --type q8_0 --n-expert 32 --n-expert-used 4 --routing token)
    # 45%: 6 layers' experts and a single matrix of the next layer's (stock: --override-tensor).
    for g in 8% 45%; do
        read -r ngl e ot < <(gpu_layers "$m" $g --weights-budget 40%)
        # shellcheck disable=SC2046
        same "MoE, GPU $g ($e expert layers, single matrices: $ot) + RAM 40% + disk vs -ngl $ngl --n-cpu-moe $((16 - e))" \
            "$(text "$m" --gpu-budget $g --weights-budget 40%)" \
            "$(text "$m" --baseline --ngl "$ngl" --n-cpu-moe $((16 - e)) $(ot_flags "$ot"))"
    done
fi

fresh_cgroup() { # name cap: page cache dropped, an empty cgroup with memory.max = cap
    local root=/sys/fs/cgroup cg=/sys/fs/cgroup/$1-$$
    sync; echo 3 > /proc/sys/vm/drop_caches
    echo +memory > "$root/cgroup.subtree_control" 2>/dev/null || true
    rmdir "$cg" 2>/dev/null || true
    mkdir "$cg"; echo "$2" > "$cg/memory.max"; echo 0 > "$cg/memory.swap.max"
    echo "$cg"
}
timed() { # label model cap [run flags...]: one run in a fresh cgroup (cap "max": none), one table row
    local cg stats=$W/stats.json
    cg=$(fresh_cgroup hypura-gpu "$3")
    (echo $BASHPID > "$cg/cgroup.procs"; exec "$H" run --model "$2" --prompt "The history of the city begins" \
        --max-tokens "${N:-$TOKENS}" --temp 1 --seed 42 --ignore-eos --threads "$THREADS" --ctx 512 \
        --disk-gbps "$GBPS" --no-expert-profile --stats-json "$stats" "${@:4}" >/dev/null 2>"$W/stderr") \
        || { echo "| $1 | failed: $(tail -1 "$W/stderr") |"; rmdir "$cg"; return; }
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('| %s | %s | %.2f | %.2f | %.1f | %.2f GiB | %.2f GiB | %.2f GiB | %.2f GiB |' % (sys.argv[2], sys.argv[4], d['decode_tok_s'], d['steady_tok_s'], d['time_to_16th_token_s'], d['disk_bytes_per_token']/2**30, d['gpu_resident_bytes']/2**30, d['peak_rss_bytes']/2**30, int(open(sys.argv[3]).read())/2**30))" \
        "$stats" "$1" "$cg/memory.peak" "${N:-$TOKENS}"
    rmdir "$cg"
}
header() { echo "| run | tokens | tok/s | steady tok/s | 16th token s | read/token | on GPU | peak RSS | cgroup peak |"; echo "|---|---|---|---|---|---|---|---|---|"; }

if wants fits || wants 13b || wants moe || wants moe-split; then
    m7=$(synth llama-7b q4_0)
    sync; echo 3 > /proc/sys/vm/drop_caches
    t0=$(date +%s.%N); dd if="$m7" of=/dev/null bs=4M iflag=direct status=none; t1=$(date +%s.%N)
    GBPS=$(awk -v b="$(stat -c %s "$m7")" -v a="$t0" -v z="$t1" 'BEGIN { printf "%.2f", b / (z - a) / 1e9 }')
    echo "== disk: dd O_DIRECT bs=4M of $(basename "$m7"): $GBPS GB/s"
fi
if wants fits; then
    echo "== $(date -u +%T)"
    echo "== 7B Q4_0 wholly on the GPU, uncapped"; header
    timed "stock -ngl 99" "$m7" max --baseline --ngl 99
    timed "hypura --gpu-budget all" "$m7" max --gpu-budget all
fi
if wants 13b; then
    echo "== $(date -u +%T)"
    m=$(synth llama-13b q4_0)
    bytes=$(stat -c %s "$m"); cap=$((bytes / 4))
    echo "== 13B Q4_0: GPU budget 25% of the model, RAM cap 25% ($cap bytes)"
    "$H" plan --model "$m" --gpu-budget 25% --memory "$cap" --ctx 512 --disk-gbps "$GBPS" --no-expert-profile || true
    header
    timed "hypura --gpu-budget 25% --memory ${H13_MEM:-cap}" "$m" "$cap" --gpu-budget 25% --memory "${H13_MEM:-$cap}"
    read -r ngl _ < <(gpu_layers "$m" 25% --weights-budget 25%)
    # more layers than $ngl would exceed the GPU budget; fewer leave more to the thrashing cache
    for n in "$ngl" $((ngl - 2)); do
        N=$STOCK_TOKENS timed "stock -ngl $n" "$m" "$cap" --baseline --ngl "$n"
    done
fi
if wants moe-split; then
    # hypura alone at each GPU budget of $MOE_GPU_BUDGETS, alternating, $MOE_ROUNDS rounds: with
    # 8G the budget's rest holds two single expert matrices, with 7.5G none (the same 9 whole
    # layers of experts): what the single matrices are worth, side by side.
    echo "== $(date -u +%T)"
    m=$(synth mixtral-8x7b q4_0 --routing token)
    for g in ${MOE_GPU_BUDGETS:-8G 7.5G}; do
        echo "== GPU budget $g: $("$H" plan --model "$m" --gpu-budget "$g" --memory 16G --ctx 512 --disk-gbps "$GBPS" --no-expert-profile | grep -E '^(resident on the GPU|read per token)' | tr -s ' ' | tr '\n' ';')"
    done
    header
    for _ in $(seq "${MOE_ROUNDS:-2}"); do
        for g in ${MOE_GPU_BUDGETS:-8G 7.5G}; do
            timed "hypura --gpu-budget $g --memory 16G" "$m" 16G --gpu-budget "$g" --memory 16G
        done
    done
fi
if wants moe; then
    echo "== $(date -u +%T)"
    m=$(synth mixtral-8x7b q4_0 --routing token)
    echo "== Mixtral shape Q4_0 (near-uniform routing): GPU budget 8 GiB, RAM cap 16 GiB"
    "$H" plan --model "$m" --gpu-budget 8G --memory 16G --ctx 512 --disk-gbps "$GBPS" --no-expert-profile || true
    header
    timed "hypura --gpu-budget 8G --memory ${MOE_MEM:-16G}" "$m" 16G --gpu-budget 8G --memory "${MOE_MEM:-16G}"
    # Stock with hypura's placement of compute (its expert layers, single matrices too).
    read -r _ e ot < <(PLAN_CTX=512 gpu_layers "$m" 8G --memory 16G)
    n_layers=32
    # shellcheck disable=SC2046
    N=${MOE_STOCK_TOKENS:-$TOKENS} timed "stock, hypura's placement: -ngl 99 --n-cpu-moe $((n_layers - e)) $(ot_flags "$ot")" \
        "$m" 16G --baseline --ngl 99 --n-cpu-moe $((n_layers - e)) $(ot_flags "$ot")
    for n in ${MOE_NGL-6 8 10}; do N=${MOE_STOCK_TOKENS:-$TOKENS} timed "stock -ngl $n" "$m" 16G --baseline --ngl "$n"; done
    for n in ${MOE_CPU_MOE-32 28 24}; do N=${MOE_STOCK_TOKENS:-$TOKENS} timed "stock -ngl 99 --n-cpu-moe $n" "$m" 16G --baseline --ngl 99 --n-cpu-moe "$n"; done
fi
