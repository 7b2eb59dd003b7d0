#!/usr/bin/env bash
# Sets up and runs every check: lint, types, import layers, the test suite, then the
# end-to-end suite (on a sandbox of its own: it installs the chart cluster-wide).
# Extra arguments go to pytest instead, and skip the end-to-end suite
# (e.g. `scripts/test.sh tests/unit -k planner`).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=$(scripts/setup.sh | tail -n 1)
export PATH="$venv/bin:$PATH"

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy --strict"
mypy -p voicefleet
mypy tests e2e bench
echo "== import layers"
lint-imports
echo "== sandbox binaries (built from Go modules once, then cached)"
e2e/build-sandbox.sh
if [[ $# -gt 0 ]]; then
    echo "== pytest $*"
    exec pytest "$@"
fi
echo "== host packages for the images and the real node (Debian; installed when missing)"
scripts/setup-host.sh
echo "== images (buildah, a base made from Debian packages; layers cached)"
scripts/build-images.sh --base debian --prune
echo "== the operator image again, without the cache: the same digest"
scripts/build-images.sh --base debian --check-reproducible operator
echo "== pytest tests"
pytest tests
echo "== pytest e2e (the real node's pods first, then the fake GPU fleet)"
pytest e2e
