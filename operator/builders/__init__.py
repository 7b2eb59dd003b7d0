"""Pure builders: pool spec and plan in, Kubernetes manifests (plain dicts) out.

No I/O, no kopf, no Kubernetes client (import-linter enforces it); every builder has a
unit test in ``tests/operator/test_builders.py``.
"""

from voicefleet.operator.builders.common import (
    PoolRef,
    content_hash,
    owner_reference,
    selector_labels,
    selector_string,
)
from voicefleet.operator.builders.gateway import (
    build_gateway_deployment,
    build_gateway_pdb,
    gateway_name,
    gateway_selector,
)
from voicefleet.operator.builders.ownership import owned_by
from voicefleet.operator.builders.pdb import build_pdb, pdb_name
from voicefleet.operator.builders.pod import (
    PodSettings,
    build_pod,
    build_pod_template,
    ordinal_of,
    pod_name,
)
from voicefleet.operator.builders.secret import build_secret, pool_token, secret_name
from voicefleet.operator.builders.services import (
    build_headless_service,
    build_service,
    headless_service_name,
    service_name,
)

__all__ = [
    "PodSettings",
    "PoolRef",
    "build_gateway_deployment",
    "build_gateway_pdb",
    "build_headless_service",
    "build_pdb",
    "build_pod",
    "build_pod_template",
    "build_secret",
    "build_service",
    "content_hash",
    "gateway_name",
    "gateway_selector",
    "headless_service_name",
    "ordinal_of",
    "owned_by",
    "owner_reference",
    "pdb_name",
    "pod_name",
    "pool_token",
    "secret_name",
    "selector_labels",
    "selector_string",
    "service_name",
]
