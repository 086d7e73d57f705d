#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian/Ubuntu machine:
# the system tools the loopback fleet runs (OpenSSH server, git, Redis, sudo)
# and the Frappe bench needs (node),
# then a virtualenv with the package and its test extras.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v git >/dev/null || need+=(git)
command -v redis-server >/dev/null || need+=(redis-server)
# the agent (real or loopback) reaches its root-owned supervisord through sudo
command -v sudo >/dev/null || need+=(sudo)
# the Frappe bench of `make test` (scripts/frappe-bench.sh): node 18+, flock
command -v node >/dev/null || need+=(nodejs npm)
command -v flock >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# sshd refuses to start without its privilege-separation directory.
[ -d /run/sshd ] || { [ "$(id -u)" -eq 0 ] && mkdir -p /run/sshd; } || true

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[test]'
echo "setup: ready ($("$VENV/bin/python" --version), $(ssh -V 2>&1))"
