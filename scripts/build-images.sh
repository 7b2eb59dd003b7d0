#!/usr/bin/env bash
# Builds the operator and runtime images reproducibly with buildah into OCI layouts
# (${VOICEFLEET_IMAGE_DIR:-~/.cache/voicefleet/images/oci}/<image>) and prints their digests
# and sizes. `--base debian` makes the base from Debian packages (no registry needed);
# `--archive` also writes <image>.oci.tar; `--help` lists the rest. See voicefleet/images.py.
#
# Needs buildah (and mmdebstrap for --base debian) and Python 3.11+ (stdlib only).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# Only the voicefleet package goes on the path, never the repository root: its operator/
# folder would shadow the standard library's `operator` module.
path="$(mktemp -d)"
trap 'rm -rf "$path"' EXIT
ln -s "$root/voicefleet" "$path/voicefleet"
cd "$root"
PYTHONPATH="$path" "${PYTHON:-python3}" -P -m voicefleet.images "$@"
