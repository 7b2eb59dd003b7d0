"""The one place that pins what the sandbox builds.

Kubernetes 1.34: supported by kopf 1.44 and the ``kubernetes`` Python client, and within
kubectl's one-minor skew of the 1.33-1.35 clients found on developer machines. etcd 3.6 is
the series Kubernetes 1.34 is tested with; kwok 0.7 and helm 3.19 are built against the
1.34 client libraries. Bump these together and the cache directory changes with them, so
an old cache is never mixed with new binaries.
"""

from __future__ import annotations

from typing import Final

KUBERNETES_VERSION: Final = "v1.34.4"
ETCD_VERSION: Final = "v3.6.16"
KWOK_VERSION: Final = "v0.7.0"
HELM_VERSION: Final = "v3.19.5"
# What the chart and the operator's objects are checked with (tests/unit's lint tests).
KUBECONFORM_VERSION: Final = "v0.8.0"
KUBE_SCORE_VERSION: Final = "v1.20.0"


def staging_version(kubernetes_version: str = KUBERNETES_VERSION) -> str:
    """The ``k8s.io/<staging>`` module version that ships with a Kubernetes release.

    Kubernetes publishes its staging repositories (client-go, apiserver, ...) as
    ``v0.<minor>.<patch>`` for release ``v1.<minor>.<patch>``.
    """
    major, minor, patch = kubernetes_version.lstrip("v").split(".")
    if major != "1":
        raise ValueError(f"unexpected Kubernetes version {kubernetes_version}")
    return f"v0.{minor}.{patch}"
