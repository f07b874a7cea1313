#!/usr/bin/env bash
# What `make bench` needs beyond the build: the luajit interpreter and
# lua-luv, for the luv peer (bench/luv/).  Installs them when we are
# root, else prints the apt-get line and fails.  tools/deps.sh (make,
# make test) is left alone: the tests do not need luv.
set -euo pipefail

required=(luajit lua-luv)

. "$(dirname "$0")/../tools/dpkg.sh"

missing=()
for pkg in "${required[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
  install_missing "bench deps" "${missing[@]}"
fi

# A luajit that cannot load luv (a hand-built one first on PATH, say)
# would only fail later, in the middle of the runs.
if ! luajit -e 'require("luv")' 2>/dev/null; then
  echo "bench deps: luajit cannot require luv" >&2
  exit 1
fi
echo "bench deps: luajit and lua-luv are installed"
