# Shared set-up for scripts/run and scripts/test (sourced, not run): installs what is
# missing on a Debian machine, saying what it installs.

have() { command -v "$1" >/dev/null 2>&1; }

# The nats-server binary: on PATH, or where the Debian package puts it.
nats_server_path() {
  if have nats-server; then command -v nats-server
  elif [ -x /usr/sbin/nats-server ]; then echo /usr/sbin/nats-server
  fi
}

# apt_install PACKAGE...: installs the Debian packages given (with sudo when not root).
apt_install() {
  [ $# -gt 0 ] || return 0
  echo "== installing $* (Debian packages)"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}

# ensure_nats_server: installs the Debian package nats-server when no binary is found.
ensure_nats_server() {
  [ -n "$(nats_server_path)" ] || apt_install nats-server
}
