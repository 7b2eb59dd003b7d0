"""Kubeconfig files for the sandbox's users, with the certificates embedded.

Embedded rather than referenced by path: the admin kubeconfig can then be copied, or
read by a client in another working directory, and still work.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Final

import yaml

from voicefleet.sandbox.pki import KeyPair

CLUSTER_NAME: Final = "voicefleet-sandbox"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write(path: Path, *, server: str, ca: Path, user: str, credentials: KeyPair) -> Path:
    """Write a kubeconfig whose one context is ``user`` on the sandbox."""
    context = f"{user}@{CLUSTER_NAME}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(credentials.cert),
                    "client-key-data": _b64(credentials.key),
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": context,
        "preferences": {},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
