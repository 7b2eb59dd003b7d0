#!/usr/bin/env bash
# Sets up, then runs voicefleet end to end on this machine (no GPU, no cloud, no cluster):
# the capacity plan of a 200-conversation Moshi pool, then a real Kubernetes control plane
# with fake GPU nodes, the Helm chart, the operator, the pool, and an interruption drill on
# real runtime processes with its timings; everything is torn down at the end.
# First run: ~5 min for the Python environment (torch) and ~12 min to build the control
# plane from Go modules; both are cached, and later runs take about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=$(scripts/setup.sh | tail -n 1)
export PATH="$venv/bin:$PATH"
exec python -m e2e.demo
