#!/usr/bin/env bash
# Installs the Debian packages the image builds and the sandbox's real node need, when they
# are missing (apt-get update once, then install): buildah and mmdebstrap build the images;
# containerd, runc and the CNI plugins run the real node's pods; iptables for kube-proxy;
# chromium runs the browser tests of the page at / (with a fake microphone); PulseAudio,
# PortAudio with ALSA's pulse plugin, and espeak-ng give Kyutai's moshi.client a headless
# microphone and speaker.
# Needs root (as CI and the development machines run). Nothing happens when all are there.
set -euo pipefail
packages=(buildah mmdebstrap containerd runc containernetworking-plugins iptables iproute2
    chromium pulseaudio pulseaudio-utils libportaudio2 libasound2-plugins espeak-ng)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi
echo "setup-host: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
