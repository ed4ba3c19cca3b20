#!/usr/bin/env bash
# Install the system tools the miner is run with: Node.js + npm (from the OS packages,
# via apt) and pm2 (the process manager, via npm). Safe to run again: anything already
# present is left alone. Python itself (python3 with venv) is checked, not installed
# unless missing.
#
#   bash install_system_deps.sh
set -euo pipefail

say() { echo "[install_system_deps] $*"; }

# pm2's version without running pm2: any pm2 command, --version included, spawns its
# daemon (under ~/.pm2), which an install script must not leave behind.
pm2_version() {
  local root
  root="$(npm root -g 2>/dev/null || true)"
  if [ -n "$root" ] && [ -f "$root/pm2/package.json" ]; then
    node -p "require(process.argv[1]).version" "$root/pm2/package.json" 2>/dev/null || echo "(version unknown)"
  else
    echo "(version unknown)"
  fi
}

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
# (Debian's python3 imports venv without python3-venv but cannot create one: try it.)
venv_probe="$(mktemp -d)"
if command -v python3 >/dev/null 2>&1 && python3 -m venv "$venv_probe/v" >/dev/null 2>&1; then
  say "python3 with venv: present ($(python3 --version 2>&1))"
else
  py_minor="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")' 2>/dev/null || true)"
  apt_install python3 python3-venv python3-pip ${py_minor:+python${py_minor}-venv}
fi
rm -rf "$venv_probe"

# Node.js + npm from the OS packages. Debian's nodejs comes without npm (a package of its
# own), while builds that bundle npm (e.g. NodeSource's nodejs) conflict with Debian's npm
# package: install npm only if it is still missing after nodejs.
if command -v node >/dev/null 2>&1; then
  say "node $(node --version): present"
else
  apt_install nodejs
fi
if command -v npm >/dev/null 2>&1; then
  say "npm $(npm --version): present"
else
  apt_install npm
fi

# pm2 from npm.
if command -v pm2 >/dev/null 2>&1; then
  say "pm2 $(pm2_version): present"
else
  say "npm install -g pm2"
  $SUDO npm install -g pm2
fi

command -v pm2 >/dev/null 2>&1 || { say "pm2 is not on PATH after 'npm install -g pm2' (npm prefix: $(npm prefix -g))"; exit 1; }
say "done: node $(node --version), npm $(npm --version), pm2 $(pm2_version)"
