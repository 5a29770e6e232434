#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with everything fedgaze, its
# tests and its linters need. Idempotent; safe to run on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# constraints.txt pins the CPU torch wheel and the Flower line whose Fleet API is gRPC; the
# alignment extra (trl, datasets, transformers) is for `fedgaze alignment export` to DPO.
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev,alignment,simulation]"
# Browser tests drive Debian's Chromium through Playwright (never `playwright install`).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
