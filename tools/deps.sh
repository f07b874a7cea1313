#!/usr/bin/env bash
# Check that the Debian packages nshost needs to build and test are
# installed, and install the missing ones when we are root.
#
# LuaJIT comes in two conflicting packages (upstream libluajit-5.1-dev and
# OpenResty's libluajit2-5.1-dev); either one satisfies us, and we install
# the upstream one only when neither is there, so that setting up nshost
# never removes another program's Lua.
set -euo pipefail

# Packages checked by name; LuaJIT is handled apart, see above.
required=(cmake pkg-config libuv1-dev libxxhash-dev libjemalloc-dev lua-busted
          gcc make)

. "$(dirname "$0")/dpkg.sh"

have_luajit() {
  installed libluajit-5.1-dev && return 0
  installed libluajit2-5.1-dev && return 0
  # A LuaJIT built by hand is fine too, if pkg-config can see it.
  command -v pkg-config >/dev/null 2>&1 && pkg-config --exists luajit
}

missing=()
for pkg in "${required[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done
have_luajit || missing+=(libluajit-5.1-dev)

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all build dependencies are installed"
  exit 0
fi

install_missing deps "${missing[@]}"

# Check again, so that a package that did not install fails here and not
# later in a confusing build error.
for pkg in "${required[@]}"; do
  installed "$pkg" || { echo "deps: $pkg still missing" >&2; exit 1; }
done
have_luajit || { echo "deps: LuaJIT still missing" >&2; exit 1; }
echo "deps: installed ${missing[*]}"
