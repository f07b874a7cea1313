#!/usr/bin/env bash
# Installs a built tree into a temporary prefix and builds the embedding
# examples against the installed copy only: with pkg-config (shared and
# static) and with CMake's find_package.  Then runs them briefly.
#
#   spec/install_test.sh BUILD_DIR SOURCE_DIR
#
# CTest runs it (label "install").  Everything happens under one
# temporary directory, removed at the end.
set -euo pipefail

build=$(cd "${1:?usage: install_test.sh BUILD_DIR SOURCE_DIR}" && pwd)
src=$(cd "${2:?usage: install_test.sh BUILD_DIR SOURCE_DIR}" && pwd)
examples=$src/examples/embed
tmp=$(mktemp -d "${TMPDIR:-/tmp}/nshost-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
cc=${CC:-cc}

fail() {
  echo "install_test: $*" >&2
  exit 1
}

step() {
  echo "== $*"
}

# Runs game_server ($1) for a few ticks and checks its statistics.
check_game_server() {
  local out
  out=$("$@" -n 100 -t 10 -w 2 -d "$examples") ||
    fail "$1 exited with status $?"
  for re in '^ticks: 10$' '^lua wait per tick: mean [0-9.]+ ms, p50 ' \
            '^late ticks: [0-9]+ of 10$' '^goals reached: [0-9]+$'; do
    grep -Eq "$re" <<<"$out" || fail "$1: no line matches '$re':
$out"
  done
}

# Runs tool ($1) on the test inputs; the output must be exactly the
# expected one.
check_tool() {
  (cd "$examples" && "$1" testdata/sonnet.txt testdata/counts.txt \
     testdata/empty.txt) >"$tmp/tool.out" || fail "$1 exited with $?"
  diff -u "$examples/testdata/tool.expected" "$tmp/tool.out" ||
    fail "$1: the output differs"
}

step "cmake --install into $prefix"
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" ||
  { cat "$tmp/install.log"; fail "cmake --install failed"; }

pc=$(find "$prefix" -name nshost.pc)
[ -n "$pc" ] || fail "no nshost.pc installed"
libdir=$(dirname "$(dirname "$pc")")
for f in "$prefix/include/nshost.h" "$libdir/libnshost.a" \
         "$libdir/libnshost.so" "$libdir/cmake/nshost/nshostConfig.cmake" \
         "$libdir/cmake/nshost/nshostConfigVersion.cmake" \
         "$libdir/cmake/nshost/nshostTargets.cmake"; do
  [ -e "$f" ] || fail "not installed: $f"
done

step "the shared library: soname, and only the public API exported"
soname=$(readelf -d "$libdir/libnshost.so" |
         sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = libnshost.so.0 ] || fail "soname is '$soname'"
[ -e "$libdir/$soname" ] || fail "no $soname in $libdir"
others=$(nm -D --defined-only "$libdir/libnshost.so" | awk '
  $3 !~ /^nshost_/ && $3 !~ /^(_init|_fini|_edata|_end|__bss_start)$/')
[ -z "$others" ] || fail "exported besides nshost_*:
$others"

step "pkg-config"
export PKG_CONFIG_PATH=$libdir/pkgconfig
version=$(sed -n 's/^#define NSHOST_VERSION_STRING "\(.*\)"$/\1/p' \
          "$prefix/include/nshost.h")
[ "$(pkg-config --modversion nshost)" = "$version" ] ||
  fail "pkg-config --modversion: $(pkg-config --modversion nshost)"
pkg-config --cflags --libs nshost

step "build the examples with pkg-config --cflags --libs nshost"
# Nothing of the build tree may be used: only what was installed.
# shellcheck disable=SC2046
$cc -std=c11 -Wall -Wextra -o "$tmp/tool" "$examples/tool.c" \
  $(pkg-config --cflags --libs nshost)
# shellcheck disable=SC2046
$cc -std=c11 -Wall -Wextra -o "$tmp/game_server" \
  "$examples/game_server.c" $(pkg-config --cflags --libs nshost)
# (Output to a variable first: with pipefail, grep -q quitting early
# could fail the pipe.)
deps=$(LD_LIBRARY_PATH=$libdir ldd "$tmp/tool")
grep -q "$libdir/libnshost.so.0" <<<"$deps" ||
  fail "tool does not use $libdir: $deps"
LD_LIBRARY_PATH=$libdir check_tool "$tmp/tool"
LD_LIBRARY_PATH=$libdir check_game_server "$tmp/game_server"

step "game_server stops cleanly on SIGINT"
LD_LIBRARY_PATH=$libdir "$tmp/game_server" -n 200 -w 2 -d "$examples" \
  >"$tmp/sigint.out" &
pid=$!
sleep 1
kill -INT "$pid"
status=0
wait "$pid" || status=$?
[ "$status" = 0 ] || fail "game_server exited with $status after SIGINT"
grep -q '^ticks: [0-9]* (interrupted)$' "$tmp/sigint.out" ||
  fail "no interrupted ticks line: $(cat "$tmp/sigint.out")"
grep -q '^late ticks: ' "$tmp/sigint.out" || fail "no statistics"

step "the static library with pkg-config --static"
# -lnshost would pick the shared library; name the archive instead,
# and let --as-needed drop the -lnshost that pkg-config adds.
# shellcheck disable=SC2046
$cc -std=c11 -Wall -Wextra -o "$tmp/tool_static" "$examples/tool.c" \
  $(pkg-config --cflags nshost) -Wl,--as-needed -l:libnshost.a \
  $(pkg-config --static --libs nshost)
needed() {
  readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
}
case $(needed "$tmp/tool_static") in
  *libnshost*) fail "tool_static needs libnshost.so" ;;
esac
check_tool "$tmp/tool_static"

step "find_package(nshost) from a CMake project"
mkdir -p "$tmp/proj"
cat >"$tmp/proj/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.16)
project(nshost_consumer C)
find_package(nshost 0.1 REQUIRED)
add_executable(tool_shared "$examples/tool.c")
target_link_libraries(tool_shared PRIVATE nshost::nshost)
add_executable(tool_static "$examples/tool.c")
target_link_libraries(tool_static PRIVATE nshost::nshost_static)
add_executable(game_server "$examples/game_server.c")
target_link_libraries(game_server PRIVATE nshost::nshost)
EOF
cmake -S "$tmp/proj" -B "$tmp/proj/build" -DCMAKE_PREFIX_PATH="$prefix" \
  >"$tmp/proj.log" || { cat "$tmp/proj.log"; fail "configure failed"; }
cmake --build "$tmp/proj/build" >>"$tmp/proj.log" ||
  { cat "$tmp/proj.log"; fail "build failed"; }
check_tool "$tmp/proj/build/tool_shared"
check_tool "$tmp/proj/build/tool_static"
case $(needed "$tmp/proj/build/tool_static") in
  *libnshost*) fail "nshost::nshost_static links the shared library" ;;
esac
case $(needed "$tmp/proj/build/tool_shared") in
  *libnshost.so.0*) ;;
  *) fail "nshost::nshost does not link the shared library" ;;
esac
check_game_server "$tmp/proj/build/game_server"

step "the version file refuses another minor version"
sed -i 's/(nshost 0.1 REQUIRED)/(nshost 0.2 REQUIRED)/' \
  "$tmp/proj/CMakeLists.txt"
if cmake -S "$tmp/proj" -B "$tmp/proj/build2" \
     -DCMAKE_PREFIX_PATH="$prefix" >"$tmp/proj2.log" 2>&1; then
  fail "find_package(nshost 0.2) accepted version $version"
fi

echo "install_test: all passed"
