#!/usr/bin/env bash
# The test run: set up, make sure the services run, then the whole suite and the linters.
set -eu
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/services.sh
.venv/bin/python -m pytest "$@"
.venv/bin/ruff check .
.venv/bin/mypy
