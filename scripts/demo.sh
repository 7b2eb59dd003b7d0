#!/usr/bin/env bash
# Sets up, then runs voicefleet's main job on the embedded example: the capacity plan of a
# 200-conversation Moshi pool on H100s, batched beside one-model-per-session serving.
# No cluster, no GPU, no cloud account.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=$(scripts/setup.sh | tail -n 1)
export PATH="$venv/bin:$PATH"

pool=examples/support-en.yaml
echo "== voicefleet plan -f $pool --compare"
voicefleet plan -f "$pool" --compare
echo
echo "== voicefleet plan -f $pool -o json"
voicefleet plan -f "$pool" -o json
