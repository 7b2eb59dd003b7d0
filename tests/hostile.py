"""The pool template of issue 9's security report, for the tests that show it gets nowhere.

It asks for another namespace, a controller's ServiceAccount, privilege, the node's
namespaces, the node's root filesystem, a node picked by name past its taints, and
voicefleet's own keys (the drain annotation that made every pod born draining), next to a
few things a template may set.
"""

from __future__ import annotations

from typing import Any, Final

from voicefleet import constants

DRAINING: Final = {constants.ANNOTATION_DRAINING: "true"}

HOSTILE: dict[str, Any] = {
    "metadata": {
        "namespace": "kube-system",
        "name": "takeover",
        "finalizers": ["example.com/never"],
        "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "u"}],
        "labels": {constants.LABEL_POOL: "other", "team": "voice"},
        "annotations": {
            **DRAINING,
            "container.apparmor.security.beta.kubernetes.io/runtime": "unconfined",
            "karpenter.sh/do-not-disrupt": "true",
        },
    },
    "spec": {
        "serviceAccountName": "generic-garbage-collector",
        "automountServiceAccountToken": True,
        "hostPID": True,
        "hostNetwork": True,
        "hostIPC": True,
        "nodeName": "h100-on-demand-0",
        "securityContext": {"runAsUser": 0},
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        "initContainers": [{"name": "init", "image": "busybox"}],
        "tolerations": [{"key": "dedicated", "operator": "Exists"}],
        "containers": [
            {
                "name": constants.RUNTIME_CONTAINER,
                "image": "attacker/runtime",
                "command": ["sh"],
                "securityContext": {"privileged": True},
                "volumeMounts": [{"name": "host", "mountPath": "/host"}],
                "env": [
                    {"name": constants.ENV_POOL_TOKEN, "value": "forged"},
                    {"name": "LOG_LEVEL", "value": "debug"},
                ],
                "resources": {"limits": {constants.RESOURCE_GPU: "8", "memory": "64Gi"}},
            },
        ],
    },
}
