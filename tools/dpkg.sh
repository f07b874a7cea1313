# Helpers for tools/deps.sh and bench/deps.sh, which source this file:
# whether a Debian package is installed, and installing the missing
# ones when we are root.

# Whether package $1 is installed.  A removed package can stay in dpkg's
# database as "deinstall ... config-files", so look at the status word,
# not only the exit code.
installed() {
  local status
  status=$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) \
    || return 1
  [ "$status" = installed ]
}

# Installs the packages named after $1, which starts every message.  As
# anyone but root, prints the apt-get line instead and exits 1.
install_missing() {
  local who=$1
  shift
  echo "$who: missing: $*"
  if [ "$(id -u)" -ne 0 ]; then
    echo "$who: run this as root, or:" >&2
    echo "sudo apt-get install -y $*" >&2
    exit 1
  fi
  # CI has no terminal: keep debconf from asking questions.
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "$@"
}
