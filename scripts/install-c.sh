#!/usr/bin/env bash
# Installs libhypura (shared and static), include/hypura.h, module.modulemap and a pkg-config
# file under PREFIX (default /usr/local). Build first: cargo build --release -p hypura-ffi
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${1:-/usr/local}"
LIBDIR="$PREFIX/lib"
INCLUDEDIR="$PREFIX/include"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/release"
mkdir -p "$LIBDIR/pkgconfig" "$INCLUDEDIR/hypura"
for lib in libhypura.so libhypura.dylib libhypura.a; do
    [ -f "$TARGET/$lib" ] && cp "$TARGET/$lib" "$LIBDIR/"
done
cp "$ROOT/include/hypura.h" "$INCLUDEDIR/"
cp "$ROOT/include/module.modulemap" "$INCLUDEDIR/hypura/"
sed -e "s|@PREFIX@|$PREFIX|" -e "s|@LIBDIR@|$LIBDIR|" -e "s|@INCLUDEDIR@|$INCLUDEDIR|" -e "s|@VERSION@|$VERSION|" \
    "$ROOT/packaging/hypura.pc.in" > "$LIBDIR/pkgconfig/hypura.pc"
echo "installed libhypura $VERSION under $PREFIX (pkg-config: PKG_CONFIG_PATH=$LIBDIR/pkgconfig)"
