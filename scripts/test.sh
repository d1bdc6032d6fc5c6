#!/usr/bin/env bash
# The test suite: set up (once), install Debian's chromium for the browser tests when we can
# (root + apt), then ruff and mypy, then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test

need=()
command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || need+=(chromium chromium-driver)
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[test] installing Debian packages: ${need[*]}"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null \
      || echo "[test] apt-get install ${need[*]} failed: browser/Fashion-MNIST tests will skip (and fail under CI)"
  else
    echo "[test] not root or no apt-get: cannot install ${need[*]}; browser tests will skip (and fail under CI)"
  fi
fi
# lint and types first (seconds): settings in pyproject.toml; either one unclean fails the run
echo "[test] ruff check (vae_visdom tests benchmarks scripts) and mypy (vae_visdom)"
.venv/bin/ruff check vae_visdom tests benchmarks scripts
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
