#!/usr/bin/env bash
# Builds (or reuses) the sandbox's binaries from pinned Go modules: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, kwok and helm, into
# ${VOICEFLEET_K8S_CACHE:-~/.cache/voicefleet/k8s-<version>}/bin. The versions are pinned in
# voicefleet/sandbox/versions.py. Nothing is rebuilt when the cache has it; the first build
# takes about twelve minutes on two cores. Names as arguments build only those.
#
# Needs Go 1.24+ and Python 3.11+ (stdlib only: the build module has no dependencies, so this
# runs before any virtual environment exists).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# Only the voicefleet package goes on the path, never the repository root: its operator/
# folder would shadow the standard library's `operator` module. -P keeps the current
# directory off the path for the same reason.
path="$(mktemp -d)"
trap 'rm -rf "$path"' EXIT
ln -s "$root/voicefleet" "$path/voicefleet"
PYTHONPATH="$path" "${PYTHON:-python3}" -P -m voicefleet.sandbox.build "$@"
