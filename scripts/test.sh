#!/usr/bin/env bash
# Sets up and runs every check: lint, types, import layers, then the test suite.
# Extra arguments go to pytest (e.g. `scripts/test.sh -k planner`).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=$(scripts/setup.sh | tail -n 1)
export PATH="$venv/bin:$PATH"

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy --strict"
mypy -p voicefleet
echo "== import layers"
lint-imports
echo "== sandbox binaries (built from Go modules once, then cached)"
e2e/build-sandbox.sh
echo "== pytest"
pytest "$@"
