#!/usr/bin/env bash
# Start the visdom server for vae_visdom (offline UI files, 127.0.0.1:8097 by default), with the runs home
# (the env `runs`: every run under --runs-dir, default ./runs; --no-home for none) as its child process.
# Creates .venv first (scripts/setup.sh) when it is missing or incomplete. Arguments go to `vae-visdom serve`:
#   ./run_server.sh                 # foreground; Ctrl-C or SIGTERM saves the envs to ~/.visdom
#   ./run_server.sh --detach        # background (or reuse a running one), log in ~/.visdom
#   ./run_server.sh --port 8098 --env-path runs/visdom
#   ./run_server.sh --max-page-runs 4   # runs the pages may start at once (home's form + Fork); default 2
# Neither the server process nor the runs home's imports torch (serve/compat.py, without_torch).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")" && pwd)
if [ ! -x "$ROOT/.venv/bin/vae-visdom" ]; then
  echo "[run_server] $ROOT/.venv is missing or incomplete: running scripts/setup.sh" >&2
  "$ROOT/scripts/setup.sh"
fi
exec "$ROOT/.venv/bin/vae-visdom" serve "$@"
