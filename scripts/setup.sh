#!/usr/bin/env bash
# Installs what wfops, its tests and its demo need on a fresh Debian machine (idempotent, quick when done):
#   - Debian packages: OpenSSH server and client, rsync, tmux, git, shellcheck, python3 with venv and pip
#   - the "pod image" stand-in: torch==2.13.0 (CPU build) and numpy in the system python3 (/usr/bin/python3),
#     because a pod's venv is made with --system-site-packages over the image's python
#   - .venv: wfops itself (editable) with its dev (pytest, ruff, mypy, pre-commit), lium and report (matplotlib,
#     ~15 s more) extras
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

packages=(openssh-server openssh-client rsync tmux git shellcheck procps python3 python3-venv python3-pip python3-setuptools)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: apt-get install ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

POD_PYTHON=${WFOPS_TEST_POD_PYTHON:-/usr/bin/python3}
if ! "$POD_PYTHON" -c 'import torch, numpy' 2>/dev/null; then
  echo "setup: installing torch==2.13.0 (CPU) and numpy into $POD_PYTHON (the pod image stand-in)"
  $SUDO "$POD_PYTHON" -m pip install -q --break-system-packages torch==2.13.0 numpy
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import wfops, pytest, xdist, lium, hatchling, vermin, matplotlib, mypy' 2>/dev/null \
    || [ pyproject.toml -nt .venv/.wfops-setup ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e ".[dev,lium,report]"
  touch .venv/.wfops-setup
fi
echo "setup: ready (.venv, $POD_PYTHON with torch $("$POD_PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null))"
