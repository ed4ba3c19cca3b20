#!/usr/bin/env bash
# Install the system tools the miner is run with: Node.js + npm (from the OS packages,
# via apt) and pm2 (the process manager, via npm). Safe to run again: anything already
# present is left alone. Python itself (python3 with venv) is checked, not installed
# unless missing.
#
#   bash install_system_deps.sh
set -euo pipefail

say() { echo "[install_system_deps] $*"; }

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
if ! command -v apt-get >/dev/null 2>&1; then
  say "this script uses apt-get (Debian/Ubuntu). Install Node.js, npm and 'npm install -g pm2' by hand."
  exit 1
fi

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    say "apt-get update"
    $SUDO apt-get update -y
    apt_updated=1
  fi
  say "apt-get install -y $*"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

# Python 3 with venv (the test/demo scripts create .venv with it).
if command -v python3 >/dev/null 2>&1 && python3 -m venv --help >/dev/null 2>&1; then
  say "python3 with venv: present ($(python3 --version 2>&1))"
else
  py_minor="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")' 2>/dev/null || true)"
  apt_install python3 python3-venv python3-pip ${py_minor:+python${py_minor}-venv}
fi

# Node.js + npm from the OS packages.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  say "node $(node --version) and npm $(npm --version): present"
else
  apt_install nodejs npm
fi

# pm2 from npm.
if command -v pm2 >/dev/null 2>&1; then
  say "pm2 $(pm2 --version 2>/dev/null | tail -n1): present"
else
  say "npm install -g pm2"
  $SUDO npm install -g pm2
fi

say "done: node $(node --version), npm $(npm --version), pm2 $(pm2 --version 2>/dev/null | tail -n1)"
