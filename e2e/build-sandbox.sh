#!/usr/bin/env bash
# Builds (or reuses) the sandbox's binaries from pinned Go modules: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, kwok and helm, into
# ${VOICEFLEET_K8S_CACHE:-~/.cache/voicefleet/k8s-<version>}/bin. The versions are pinned in
# voicefleet/sandbox/versions.py. Nothing is rebuilt when the cache has it; the first build
# takes about ten minutes on two cores. Names as arguments build only those.
#
# Needs Go 1.24+ and python3 (stdlib only: the build module has no dependencies, so this runs
# before any virtual environment exists).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" -m voicefleet.sandbox.build "$@"
