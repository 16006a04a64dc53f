# Sourced by scripts/serve, scripts/test, scripts/bench: one virtualenv at .venv with the
# project installed (editable) and, for tests, its test extras.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=".venv/.installed-$(cat setup.cfg pyproject.toml | sha256sum | cut -c1-16)-${ARBITER_EXTRAS:-base}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  if [ -n "${ARBITER_EXTRAS:-}" ]; then
    .venv/bin/python -m pip install -q -e ".[${ARBITER_EXTRAS}]" 2>&1 | grep -v "^WARNING: Location" || true
  else
    .venv/bin/python -m pip install -q -e . 2>&1 | grep -v "^WARNING: Location" || true
  fi
  .venv/bin/python -c "import arbiter, trio, quart_trio, hypercorn, aiortc, pylibsrtp, OpenSSL"
  touch "$stamp"
fi
