# Sourced by scripts/serve, scripts/test, scripts/bench: one virtualenv at .venv holding the
# tested versions pinned in requirements/ (serve.txt, or test.txt / bench.txt for
# ARBITER_EXTRAS=test / bench; refreshed from setup.cfg by scripts/lock), then the project
# itself, editable and with --no-deps so that pip resolves nothing on its own. `pip install -r` only
# adds: one .venv serves scripts/test and scripts/bench in turn without reinstalling.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
lock="requirements/${ARBITER_EXTRAS:-serve}.txt"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=".venv/.installed-$(cat setup.cfg pyproject.toml "$lock" | sha256sum | cut -c1-16)-${ARBITER_EXTRAS:-serve}"
if [ ! -f "$stamp" ]; then
  echo "Installing the versions pinned in $lock into .venv (once)" >&2
  # pip's chatter (setuptools' warnings while building the editable wheel) goes to a log that
  # is shown only when a step fails.
  _pip() { .venv/bin/python -m pip "$@" >.venv/pip.log 2>&1 || { cat .venv/pip.log >&2; return 1; }; }
  _pip install -q --upgrade pip
  _pip install -q -r "$lock"
  _pip install -q --no-deps -e .
  # A lock file that misses a module fails here, not in the first test.
  .venv/bin/python -c "import arbiter.server, trio, quart_trio, hypercorn, pylibsrtp, OpenSSL"
  case "${ARBITER_EXTRAS:-serve}" in
    test) .venv/bin/python -c "import aiortc, pytest, playwright, httpx" ;;
    bench) .venv/bin/python -c "import aiortc, matplotlib, httpx" ;;
  esac
  touch "$stamp"
fi
