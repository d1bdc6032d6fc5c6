#!/usr/bin/env bash
# The main job: set up (once), start the visdom server in the background unless one already answers,
# then train the default VAE on MNIST streaming to it. Extra arguments go to `vae-visdom train`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
PORT=${VAE_VISDOM_PORT:-8097}
.venv/bin/vae-visdom serve --detach --port "$PORT"
exec .venv/bin/vae-visdom train --port "$PORT" "$@"
