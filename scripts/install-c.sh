#!/usr/bin/env bash
# scripts/install-c.sh [PREFIX]: installs libhypura for C (and clang modules) under PREFIX
# (default /usr/local). Build first: cargo build --release -p hypura-ffi
#
#   PREFIX/lib/libhypura.so.X.Y.Z        shared library, stripped (SONAME libhypura.so.X)
#   PREFIX/lib/libhypura.so.X -> libhypura.so.X.Y.Z
#   PREFIX/lib/libhypura.so   -> libhypura.so.X
#   PREFIX/lib/libhypura.a               static library, without debug information
#   PREFIX/lib/pkgconfig/hypura.pc
#   PREFIX/include/hypura.h
#   PREFIX/include/hypura/module.modulemap   (`@import Hypura;` with clang -fmodules -IPREFIX/include)
#
# On macOS (untested) the shared library is libhypura.X.Y.Z.dylib, with links
# libhypura.X.dylib (its install name, @rpath/libhypura.X.dylib) and libhypura.dylib.
# Reads the build from $CARGO_TARGET_DIR/release (default target/release).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${1:-/usr/local}"
fail() { printf 'install-c.sh: %s\n' "$*" >&2; exit 1; }

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
[ -n "$VERSION" ] || fail "no version in $ROOT/Cargo.toml"
MAJOR=${VERSION%%.*}
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/release"

if [ "$(uname -s)" = Darwin ]; then
    SHARED=libhypura.dylib
    REAL=libhypura.$VERSION.dylib
    SONAME=libhypura.$MAJOR.dylib
    STRIP_SHARED=(strip -x)
    STRIP_STATIC=(strip -S)
else
    SHARED=libhypura.so
    REAL=libhypura.so.$VERSION
    SONAME=libhypura.so.$MAJOR
    STRIP_SHARED=(strip --strip-unneeded)
    STRIP_STATIC=(strip -g)
fi
for lib in "$SHARED" libhypura.a; do
    [ -f "$TARGET/$lib" ] || fail "$TARGET/$lib is missing: build it first with
    cargo build --release -p hypura-ffi
(with the same CARGO_TARGET_DIR, if you set one)"
done
command -v strip >/dev/null || fail "strip is missing (Debian: apt-get install binutils)"

mkdir -p "$PREFIX"
PREFIX="$(cd "$PREFIX" && pwd)" # absolute, for hypura.pc
LIBDIR="$PREFIX/lib"
INCLUDEDIR="$PREFIX/include"
mkdir -p "$LIBDIR/pkgconfig" "$INCLUDEDIR/hypura"

installed=()
# Copy to a temporary name, strip, then rename: a program already using the old file keeps it.
put() { # put SRC DEST MODE STRIP-COMMAND...
    local src=$1 dest=$2 mode=$3
    shift 3
    cp "$src" "$dest.tmp.$$"
    [ $# -eq 0 ] || "$@" "$dest.tmp.$$"
    chmod "$mode" "$dest.tmp.$$"
    mv -f "$dest.tmp.$$" "$dest"
    installed+=("$dest")
}
link() { # link TARGET NAME: NAME -> TARGET (relative, in LIBDIR)
    ln -sfn "$1" "$LIBDIR/$2"
    installed+=("$LIBDIR/$2 -> $1")
}

put "$TARGET/$SHARED" "$LIBDIR/$REAL" 755 "${STRIP_SHARED[@]}"
link "$REAL" "$SONAME"
link "$SONAME" "$SHARED"
put "$TARGET/libhypura.a" "$LIBDIR/libhypura.a" 644 "${STRIP_STATIC[@]}"
put "$ROOT/include/hypura.h" "$INCLUDEDIR/hypura.h" 644
put "$ROOT/include/hypura/module.modulemap" "$INCLUDEDIR/hypura/module.modulemap" 644
sed -e "s|@PREFIX@|$PREFIX|" -e "s|@LIBDIR@|$LIBDIR|" -e "s|@INCLUDEDIR@|$INCLUDEDIR|" -e "s|@VERSION@|$VERSION|" \
    "$ROOT/packaging/hypura.pc.in" > "$LIBDIR/pkgconfig/hypura.pc.tmp.$$"
mv -f "$LIBDIR/pkgconfig/hypura.pc.tmp.$$" "$LIBDIR/pkgconfig/hypura.pc"
installed+=("$LIBDIR/pkgconfig/hypura.pc")

echo "installed libhypura $VERSION under $PREFIX:"
printf '  %s\n' "${installed[@]}"
echo "compile with: cc app.c \$(PKG_CONFIG_PATH=$LIBDIR/pkgconfig pkg-config --cflags --libs hypura) -Wl,-rpath,$LIBDIR"
