"""``spec.template``: the part of a pool's pods its author may shape, as an allowlist.

Creating a pool is creating the pods it describes, in the pool's namespace, and nothing
more. So the template may set only what a Deployment author in that namespace could set
without asking for privilege, and only where the operator does not own the field:

- scheduling: ``nodeSelector``, ``affinity``, ``tolerations``, ``topologySpreadConstraints``,
  ``priorityClassName``, ``runtimeClassName``; ``imagePullSecrets``;
- ``metadata.labels`` and ``metadata.annotations``, except keys the operator sets or reads
  (``voicefleet.dev/``, ``app.kubernetes.io/managed-by``) and keys Kubernetes reserves
  (``kubernetes.io/``, ``k8s.io/``; AppArmor's annotations loosen confinement);
- the runtime container's ``resources`` (not its GPU) and ``env`` (``valueFrom`` included:
  a pod reads Secrets and ConfigMaps of its own namespace only, as a Deployment's would).

Everything else falls in one of two groups:

1. fields that would hand the author what they may not have, or that the operator owns
   (the pod's namespace, name and owners, its ServiceAccount, security context, host
   namespaces, ``nodeName``, volumes, other containers...). They are *declared* here, their
   contents left undeclared (so pruned), only so a rule can refuse each by name and say
   why (``formats.refused``): undeclared, they would be
   refused by strict clients (``kubectl``) but pruned without a word for the others (Helm,
   the Kubernetes client's default field validation), and the author would not learn why
   their pod lacks them.
2. anything else: unknown, so refused by strict clients and pruned by the others.

The scheduling fields are typed in ``scheduling.py``, the runtime container's in
``container.py``, the formats and key rules in ``formats.py``. The operator enforces the same
allowlist again when it builds a pod (``voicefleet.operator.builders.template``), so a pool
stored before this CRD, or through a CRD that was never upgraded, gets no further.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Final

from pydantic import Field, StringConstraints

from voicefleet import constants
from voicefleet.api.container import RuntimeContainer
from voicefleet.api.formats import (
    MAX_ANNOTATIONS,
    MAX_LABELS,
    MAX_LIST,
    REFUSED,
    Key,
    LabelValue,
    ObjectName,
    Opaque,
    key_format_rule,
    refusal_rules,
    refused,
    reserved_key_rules,
)
from voicefleet.api.model import ApiModel
from voicefleet.api.rules import Rule
from voicefleet.api.scheduling import (
    Affinity,
    LocalObjectReference,
    Toleration,
    TopologySpreadConstraint,
)

# --- metadata -------------------------------------------------------------------------------


class TemplateMetadata(ApiModel):
    """Labels and annotations added to every pod of the pool."""

    labels: dict[Key, LabelValue] | None = Field(
        default=None,
        max_length=MAX_LABELS,
        description=(
            "Labels added to the pods. Keys under voicefleet.dev/, kubernetes.io/ and k8s.io/ "
            "(app.kubernetes.io/ aside) and app.kubernetes.io/managed-by are refused."
        ),
    )
    annotations: dict[Key, Annotated[str, StringConstraints(max_length=65536)]] | None = Field(
        default=None,
        max_length=MAX_ANNOTATIONS,
        description=(
            "Annotations added to the pods. Keys under voicefleet.dev/, kubernetes.io/ and "
            "k8s.io/ are refused, except app.kubernetes.io/ and "
            "cluster-autoscaler.kubernetes.io/safe-to-evict."
        ),
    )
    namespace: str | None = refused("pods run in the pool's own namespace")
    name: str | None = refused("pods are named <pool>-<ordinal> by the operator")
    generate_name: str | None = refused("pods are named <pool>-<ordinal> by the operator")
    owner_references: list[Opaque] | None = refused(
        "the pool owns its pods, so deleting it deletes them"
    )
    finalizers: list[str] | None = refused("the operator decides when a pod is gone")

    RULES: ClassVar[tuple[Rule[Any], ...]] = ()  # filled below


TemplateMetadata.RULES = (
    *reserved_key_rules("labels", "labels"),
    *reserved_key_rules("annotations", "annotations"),
    *refusal_rules(TemplateMetadata),
)


# --- the pod spec ---------------------------------------------------------------------------

HOST_NAMESPACES: Final = "runtime pods never share the node's namespaces"


class TemplateSpec(ApiModel):
    """What the template may change in the pods' spec."""

    node_selector: dict[Key, LabelValue] | None = Field(
        default=None,
        max_length=MAX_LIST,
        description="Node labels the pods require, on top of the operator's GPU placement.",
    )
    affinity: Affinity | None = Field(
        default=None,
        description=(
            "Node and pod (anti-)affinity. Required node terms are combined with the "
            "operator's spot/on-demand terms, never replace them."
        ),
    )
    tolerations: list[Toleration] | None = Field(
        default=None, max_length=MAX_LIST, description="Tolerations added to the operator's."
    )
    topology_spread_constraints: list[TopologySpreadConstraint] | None = Field(
        default=None,
        max_length=8,
        description="Topology spread constraints added to the operator's (one pod per host).",
    )
    priority_class_name: ObjectName | None = Field(
        default=None, description="A PriorityClass for the pods."
    )
    runtime_class_name: ObjectName | None = Field(
        default=None,
        description="A RuntimeClass for the pods (e.g. nvidia, where the GPU operator made one).",
    )
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        default=None,
        max_length=8,
        description="Secrets of the pool's namespace to pull the runtime image with.",
    )
    containers: list[RuntimeContainer] | None = Field(
        default=None,
        max_length=1,
        description=f"Changes to the {constants.RUNTIME_CONTAINER} container: resources, env.",
    )
    service_account_name: str | None = refused(
        "set spec.runtime.serviceAccountName to run the pods as a ServiceAccount of the "
        "pool's namespace"
    )
    service_account: str | None = refused("set spec.runtime.serviceAccountName instead")
    automount_service_account_token: bool | None = refused(
        "the token is mounted only when spec.runtime.serviceAccountName names an account"
    )
    security_context: Opaque | None = refused(
        "runtime pods run under the operator's restricted security context"
    )
    host_network: bool | None = refused(HOST_NAMESPACES)
    host_pid: bool | None = Field(
        default=None, alias="hostPID", description=REFUSED + HOST_NAMESPACES
    )
    host_ipc: bool | None = Field(
        default=None, alias="hostIPC", description=REFUSED + HOST_NAMESPACES
    )
    node_name: str | None = refused(
        "it bypasses the scheduler and the nodes' taints; use nodeSelector or affinity"
    )
    volumes: list[Opaque] | None = refused(
        "weights come from spec.model.source (pvc://claim/path mounts a claim read-only)"
    )
    init_containers: list[Opaque] | None = refused("a runtime pod runs the runtime container only")

    RULES: ClassVar[tuple[Rule[Any], ...]] = ()  # filled below


TemplateSpec.RULES = (
    key_format_rule("nodeSelector", "node_selector"),
    *refusal_rules(TemplateSpec),
)


class PodTemplate(ApiModel):
    """What a pool may change in its pods: an allowlist (see the README's Security model)."""

    metadata: TemplateMetadata = Field(
        default_factory=TemplateMetadata,
        description="Labels and annotations for the pods (not voicefleet's or Kubernetes' keys).",
    )
    spec: TemplateSpec = Field(
        default_factory=TemplateSpec,
        description=(
            "Scheduling (nodeSelector, affinity, tolerations, topologySpreadConstraints, "
            "priorityClassName, runtimeClassName), imagePullSecrets, and the runtime "
            "container's resources and env."
        ),
    )
