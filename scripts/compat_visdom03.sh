#!/usr/bin/env bash
# The visdom 0.3.0 line (what `pip install` gives on Python >= 3.12) checked on this machine's Python 3.11.
# visdom 0.3.0 refuses to import below 3.12 through exactly two explicit checks (visdom/__init__.py and
# visdom/server/__main__.py); its code compiles on 3.11 and uses nothing newer. This script makes a second
# virtual environment, .venv-visdom03 (ignored by git), with visdom 0.3.0 and the same pins as .venv,
# disables those two checks there only, installs this package into it, and runs the server, monitor, panel
# and browser tests against it. Safe to run again: the venv is reused while its inputs are unchanged.
# Usage: scripts/compat_visdom03.sh [pytest args]   (the visdom-facing test files unless a tests/ path is given)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VAE_VISDOM_COMPAT_VENV:-$ROOT/.venv-visdom03}
CHECKS=("visdom/__init__.py" "visdom/server/__main__.py")
echo "[compat] visdom 0.3.0 on $(python3 --version 2>&1): its two 'Python >= 3.12' checks (${CHECKS[*]}) are DISABLED in $VENV only, as a stand-in for Python 3.12"
say() { printf '[compat] %s\n' "$*"; }
T0=$SECONDS

PY=$(command -v python3.11 || command -v python3)
[ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PY" -m venv "$VENV"; }

# the pins of constraints.txt, with visdom 0.3.0 and the pins of what it adds (openTSNE pulls scikit-learn;
# these versions have Python 3.11 wheels)
CONS=$VENV/constraints-visdom03.txt
{ grep -v '^visdom==' constraints.txt; printf 'visdom==0.3.0\nscipy==1.17.1\nscikit-learn==1.9.1\nopenTSNE==1.0.4\n'; } > "$CONS"
export PIP_CONSTRAINT=$CONS PIP_DISABLE_PIP_VERSION_CHECK=1
[ -d /opt/wheels ] && export PIP_FIND_LINKS=/opt/wheels   # the local CPU torch wheel on our machines

STAMP=$VENV/.vae_visdom_compat
want=$(cat "$CONS" pyproject.toml setup.py "$0" | sha256sum | cut -c1-16)
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]; then
  say "installing visdom 0.3.0, the pinned packages and vae_visdom (editable) into $VENV"
  "$VENV/bin/python" -m pip install -q --ignore-requires-python -e ".[test]" 2>&1 \
    | grep -v 'is ignored: it is neither a file nor a directory' || true
  echo "$want" > "$STAMP"
fi

SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
[ "$(cat "$SITE/visdom/VERSION")" = "0.3.0" ] || { say "error: $VENV does not hold visdom 0.3.0"; exit 1; }
for f in "${CHECKS[@]}"; do
  # `if sys.version_info < (3, 12):` -> `if False and ...`: the raise below it never runs; nothing else changes
  sed -i 's/^if sys.version_info < (3, 12):$/if False and sys.version_info < (3, 12):  # disabled: compat_visdom03.sh/' \
    "$SITE/$f"
  grep -q '^if False and sys.version_info < (3, 12):' "$SITE/$f" || { say "error: no version check found in $f"; exit 1; }
done
"$VENV/bin/python" -c 'import visdom, visdom.server.app; assert visdom.__version__ == "0.3.0"'

"$VENV/bin/vae-visdom" assets install
"$VENV/bin/vae-visdom" data prepare mnist
say "venv ready in $((SECONDS - T0)) s; running the visdom-facing tests against visdom 0.3.0"

TESTS=(tests/test_server.py tests/test_security_server.py tests/test_monitor.py tests/test_panel.py
       tests/test_e2e_browser.py tests/test_visdom_versions.py tests/test_home.py tests/test_panel_fork.py
       tests/test_security_doors.py)
for a in "$@"; do case $a in tests/*) TESTS=();; esac; done
set -- "${TESTS[@]}" "$@"
status=0
VAE_VISDOM_EXPECT_VISDOM=0.3.0 "$VENV/bin/python" -m pytest "$@" || status=$?
say "done in $((SECONDS - T0)) s"
exit $status
