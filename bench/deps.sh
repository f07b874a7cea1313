#!/usr/bin/env bash
# What `make bench` needs beyond the build: the luajit interpreter and
# lua-luv, for the luv peer (bench/luv/).  Installs them when we are
# root, else prints the apt-get line and fails.  tools/deps.sh (make,
# make test) is left alone: the tests do not need luv.
set -euo pipefail

required=(luajit lua-luv)

installed() {
  local status
  status=$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) \
    || return 1
  [ "$status" = installed ]
}

missing=()
for pkg in "${required[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "bench deps: missing: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "bench deps: run this as root, or:" >&2
    echo "sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
fi

# A luajit that cannot load luv (a hand-built one first on PATH, say)
# would only fail later, in the middle of the runs.
if ! luajit -e 'require("luv")' 2>/dev/null; then
  echo "bench deps: luajit cannot require luv" >&2
  exit 1
fi
echo "bench deps: luajit and lua-luv are installed"
