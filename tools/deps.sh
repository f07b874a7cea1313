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
required=(cmake pkg-config libuv1-dev lua-busted gcc make)

installed() {
  # A removed package can stay in dpkg's database as "deinstall ...
  # config-files", so look at the status word, not only the exit code.
  local status
  status=$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) \
    || return 1
  [ "$status" = installed ]
}

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

echo "deps: missing: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: run this as root, or:" >&2
  echo "sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

# CI has no terminal: keep debconf from asking questions.
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"

# Check again, so that a package that did not install fails here and not
# later in a confusing build error.
for pkg in "${required[@]}"; do
  installed "$pkg" || { echo "deps: $pkg still missing" >&2; exit 1; }
done
have_luajit || { echo "deps: LuaJIT still missing" >&2; exit 1; }
echo "deps: installed ${missing[*]}"
