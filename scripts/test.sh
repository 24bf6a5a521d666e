#!/usr/bin/env bash
# Run the test suite: sets up .venv if needed, then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/dev-setup.sh
# The sidebar's JavaScript (stores, formatters, api.js) under Node's own runner, no browser. Without
# node here it is said and skipped; in CI (LORA_CLOUD_CI set, .ci/run installs nodejs) it fails.
if command -v node >/dev/null 2>&1; then
  node --test tests/js/*.test.mjs
elif [ -n "${LORA_CLOUD_CI:-}" ]; then
  echo "node is not on PATH: the sidebar's JavaScript tests (tests/js) cannot run" >&2
  exit 1
else
  echo "note: node is not on PATH, so the sidebar's JavaScript tests (tests/js) did not run" \
    "(apt-get install nodejs)" >&2
fi
exec .venv/bin/python -m pytest "$@"
