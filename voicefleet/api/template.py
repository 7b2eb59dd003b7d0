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
   namespaces, ``nodeName``, volumes, other containers...). They are *declared* here, typed
   loosely, only so a rule can refuse each by name and say why: undeclared, they would be
   refused by strict clients (``kubectl``) but pruned without a word for the others (Helm,
   the Kubernetes client's default field validation), and the author would not learn why
   their pod lacks them.
2. anything else: unknown, so refused by strict clients and pruned by the others.

The operator enforces the same allowlist again when it builds a pod
(``voicefleet.operator.builders.template``), so a pool stored before this CRD, or through a
CRD that was never upgraded, gets no further.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import Field, StringConstraints, WithJsonSchema

from voicefleet import constants
from voicefleet.api.model import ApiModel
from voicefleet.api.rules import Rule

# --- formats, as Kubernetes validates them (apimachinery's validation package) -------------

# A qualified name: an optional DNS-subdomain prefix and '/', then a name of at most 63.
QUALIFIED_NAME_PATTERN: Final = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
QUALIFIED_NAME_MAX: Final = 253 + 1 + 63
LABEL_VALUE_PATTERN: Final = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
DNS_SUBDOMAIN_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
QUANTITY_PATTERN: Final = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
ENV_NAME_PATTERN: Final = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
CONFIG_KEY_PATTERN: Final = r"^[-._a-zA-Z0-9]+$"

# --- keys a template's labels and annotations may not use -----------------------------------

# The operator's own: it selects its pods by them, drains by them and hashes them.
OPERATOR_KEY_PATTERN: Final = r"^([a-z0-9.-]*[.])?voicefleet[.]dev/"
OPERATOR_KEYS: Final = (constants.LABEL_MANAGED_BY,)
# Kubernetes' reserved prefixes: components act on these keys (AppArmor's annotations
# loosen confinement), and we cannot vouch for what a future one does.
KUBERNETES_KEY_PATTERN: Final = r"^([a-z0-9.-]*[.])?(kubernetes[.]io|k8s[.]io)/"
# ... except the recommended app labels, and the cluster autoscaler's eviction hint.
KUBERNETES_ALLOWED_PATTERN: Final = r"^app[.]kubernetes[.]io/"
KUBERNETES_ALLOWED_KEYS: Final = ("cluster-autoscaler.kubernetes.io/safe-to-evict",)

MAX_LABELS: Final = 64
MAX_ANNOTATIONS: Final = 64
MAX_LIST: Final = 32
REFUSED: Final = "Refused: "

LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE_PATTERN)]
ObjectName = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
]
Key = Annotated[str, StringConstraints(min_length=1, max_length=QUALIFIED_NAME_MAX)]
# What a refused field holds: an object whose contents the schema leaves undeclared, so the
# API server prunes them and keeps nothing but the field's presence, which a rule refuses.
# (Kept contents, x-kubernetes-preserve-unknown-fields, would also defeat validation
# ratcheting: a pool stored before the upgrade could then get no status written.)
Opaque = Annotated[dict[str, Any], WithJsonSchema({"type": "object"})]
Quantity = int | Annotated[str, StringConstraints(max_length=64, pattern=QUANTITY_PATTERN)]


def _cel_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def is_qualified_name(key: str) -> bool:
    return len(key) <= QUALIFIED_NAME_MAX and re.match(QUALIFIED_NAME_PATTERN, key) is not None


def is_operator_key(key: str) -> bool:
    """A label or annotation key the operator sets or reads."""
    return re.match(OPERATOR_KEY_PATTERN, key) is not None or key in OPERATOR_KEYS


def is_kubernetes_key(key: str) -> bool:
    """A key under Kubernetes' reserved prefixes that a template may not set."""
    return (
        re.match(KUBERNETES_KEY_PATTERN, key) is not None
        and re.match(KUBERNETES_ALLOWED_PATTERN, key) is None
        and key not in KUBERNETES_ALLOWED_KEYS
    )


def is_reserved_key(key: str) -> bool:
    return is_operator_key(key) or is_kubernetes_key(key)


# The same three checks in CEL, for a map key bound to `k`.
_CEL_QUALIFIED = f"size(k) <= {QUALIFIED_NAME_MAX} && k.matches('{QUALIFIED_NAME_PATTERN}')"
_CEL_NOT_OPERATOR = f"!k.matches('{OPERATOR_KEY_PATTERN}') && !(k in {_cel_list(OPERATOR_KEYS)})"
_CEL_NOT_KUBERNETES = (
    f"!k.matches('{KUBERNETES_KEY_PATTERN}') || k.matches('{KUBERNETES_ALLOWED_PATTERN}') "
    f"|| k in {_cel_list(KUBERNETES_ALLOWED_KEYS)}"
)


def _map_rule(
    wire: str, attr: str, cel_ok: str, ok: Callable[[str], bool], message: str
) -> Rule[Any]:
    """A rule that every key of the optional map field ``wire`` passes ``cel_ok``."""

    def violated(model: Any) -> bool:
        keys: Mapping[str, Any] = getattr(model, attr) or {}
        return not all(ok(k) for k in keys)

    return Rule(
        cel=f"!has(self.{wire}) || self.{wire}.all(k, {cel_ok})",
        message=message,
        violated=violated,
        field_path=f".{wire}",
    )


def key_format_rule(wire: str, attr: str) -> Rule[Any]:
    return _map_rule(
        wire,
        attr,
        _CEL_QUALIFIED,
        is_qualified_name,
        f"{wire} keys must be qualified names: an optional DNS prefix and '/', then at most "
        "63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
    )


def reserved_key_rules(wire: str, attr: str) -> tuple[Rule[Any], ...]:
    return (
        key_format_rule(wire, attr),
        _map_rule(
            wire,
            attr,
            _CEL_NOT_OPERATOR,
            lambda k: not is_operator_key(k),
            f"{wire} under voicefleet.dev/ and {constants.LABEL_MANAGED_BY} are the "
            "operator's (it selects, drains and hashes its pods by them): remove them",
        ),
        _map_rule(
            wire,
            attr,
            _CEL_NOT_KUBERNETES,
            lambda k: not is_kubernetes_key(k),
            f"{wire} under kubernetes.io/ and k8s.io/ are reserved for Kubernetes, whose "
            "components act on them (AppArmor annotations loosen confinement): remove them; "
            "app.kubernetes.io/ keys and " + ", ".join(KUBERNETES_ALLOWED_KEYS) + " are allowed",
        ),
    )


def refused(why: str) -> Any:
    """A field the template may not set; ``why`` is the message the rule gives."""
    return Field(default=None, description=REFUSED + why)


def refusal_rules(model: type[ApiModel]) -> tuple[Rule[Any], ...]:
    """One rule per field declared with :func:`refused`: present means refused."""
    rules: list[Rule[Any]] = []
    for attr, field in model.model_fields.items():
        description = field.description or ""
        if not description.startswith(REFUSED):
            continue
        wire = field.alias or attr

        def violated(m: Any, a: str = attr) -> bool:
            return getattr(m, a) is not None

        rules.append(
            Rule(
                cel=f"!has(self.{wire})",
                message=f"{wire} may not be set in a pool's template: "
                + description.removeprefix(REFUSED),
                violated=violated,
                field_path=f".{wire}",
            )
        )
    return tuple(rules)


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


# --- scheduling -----------------------------------------------------------------------------

SelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]


class NodeSelectorRequirement(ApiModel):
    """A node label (or field) compared with values."""

    key: Key = Field(description="The node label key (or field, in matchFields).")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        description="In, NotIn, Exists, DoesNotExist, Gt or Lt."
    )
    values: list[Annotated[str, StringConstraints(max_length=63)]] | None = Field(
        default=None, max_length=MAX_LIST, description="Values for In, NotIn, Gt and Lt."
    )


class NodeSelectorTerm(ApiModel):
    """Requirements that must all hold for a node."""

    match_expressions: list[NodeSelectorRequirement] | None = Field(
        default=None, max_length=MAX_LIST, description="Requirements on node labels."
    )
    match_fields: list[NodeSelectorRequirement] | None = Field(
        default=None, max_length=MAX_LIST, description="Requirements on node fields."
    )


class NodeSelector(ApiModel):
    """Terms of which at least one must hold for a node."""

    node_selector_terms: list[NodeSelectorTerm] = Field(
        min_length=1,
        max_length=MAX_LIST,
        description=(
            "Terms, ORed. Each is combined with the operator's spot/on-demand placement: a "
            "pod goes to a node that meets both."
        ),
    )


class PreferredSchedulingTerm(ApiModel):
    """A node preference with its weight."""

    weight: int = Field(ge=1, le=100, description="Weight, 1-100.")
    preference: NodeSelectorTerm = Field(description="The preferred node term.")


class NodeAffinity(ApiModel):
    """Node affinity, as in a pod spec."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = Field(
        default=None, description="Nodes the pods must run on."
    )
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = (
        Field(default=None, max_length=MAX_LIST, description="Nodes the pods prefer.")
    )


class LabelSelectorRequirement(ApiModel):
    """A label compared with values."""

    key: Key = Field(description="The label key.")
    operator: SelectorOperator = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[LabelValue] | None = Field(
        default=None, max_length=MAX_LIST, description="Values for In and NotIn."
    )


class LabelSelector(ApiModel):
    """A label selector, as in metav1.LabelSelector."""

    match_labels: dict[Key, LabelValue] | None = Field(
        default=None, max_length=MAX_LIST, description="Labels that must match exactly."
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, max_length=MAX_LIST, description="Requirements, ANDed."
    )


class PodAffinityTerm(ApiModel):
    """Pods (by label) that must or must not share a topology domain with this one."""

    label_selector: LabelSelector | None = Field(default=None, description="The other pods.")
    namespaces: list[ObjectName] | None = Field(
        default=None, max_length=MAX_LIST, description="Their namespaces (default: the pool's)."
    )
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Their namespaces, by label."
    )
    topology_key: Key = Field(description="The node label that defines a domain.")
    match_label_keys: list[Key] | None = Field(
        default=None, max_length=MAX_LIST, description="Label keys taken from this pod."
    )
    mismatch_label_keys: list[Key] | None = Field(
        default=None, max_length=MAX_LIST, description="Label keys taken from this pod."
    )


class WeightedPodAffinityTerm(ApiModel):
    """A pod (anti-)affinity preference with its weight."""

    weight: int = Field(ge=1, le=100, description="Weight, 1-100.")
    pod_affinity_term: PodAffinityTerm = Field(description="The term.")


class PodAffinity(ApiModel):
    """Pod affinity or anti-affinity, as in a pod spec."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = Field(
        default=None, max_length=MAX_LIST, description="Terms that must hold."
    )
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = (
        Field(default=None, max_length=MAX_LIST, description="Terms preferred.")
    )


class Affinity(ApiModel):
    """Affinity, as in a pod spec."""

    node_affinity: NodeAffinity | None = Field(default=None, description="Node affinity.")
    pod_affinity: PodAffinity | None = Field(default=None, description="Pod affinity.")
    pod_anti_affinity: PodAffinity | None = Field(default=None, description="Pod anti-affinity.")


class Toleration(ApiModel):
    """A toleration, as in a pod spec; added to the operator's own."""

    key: Key | None = Field(default=None, description="The taint key; empty with Exists: all.")
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (default)."
    )
    value: LabelValue | None = Field(default=None, description="The taint value, for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="NoSchedule, PreferNoSchedule or NoExecute; empty: all."
    )
    toleration_seconds: int | None = Field(
        default=None, description="For NoExecute: how long the pod stays once tainted."
    )


class TopologySpreadConstraint(ApiModel):
    """A topology spread constraint, as in a pod spec; added to the operator's own."""

    max_skew: int = Field(ge=1, description="Most the pod count may differ between domains.")
    topology_key: Key = Field(description="The node label that defines a domain.")
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"] = Field(
        description="DoNotSchedule or ScheduleAnyway."
    )
    label_selector: LabelSelector | None = Field(default=None, description="The pods counted.")
    min_domains: int | None = Field(default=None, ge=1, description="Least eligible domains.")
    node_affinity_policy: Literal["Honor", "Ignore"] | None = Field(
        default=None, description="Honor or Ignore the pod's node affinity when counting."
    )
    node_taints_policy: Literal["Honor", "Ignore"] | None = Field(
        default=None, description="Honor or Ignore node taints when counting."
    )
    match_label_keys: list[Key] | None = Field(
        default=None, max_length=MAX_LIST, description="Label keys taken from this pod."
    )


class LocalObjectReference(ApiModel):
    """An object of the pool's namespace, by name."""

    name: ObjectName = Field(description="Its name.")


# --- the runtime container ------------------------------------------------------------------


class KeyReference(ApiModel):
    """One key of a Secret or ConfigMap of the pool's namespace."""

    name: ObjectName = Field(description="The object's name (in the pool's namespace).")
    key: Annotated[str, StringConstraints(max_length=253, pattern=CONFIG_KEY_PATTERN)] = Field(
        description="The key."
    )
    optional: bool | None = Field(default=None, description="Start even if it is missing.")


class FieldReference(ApiModel):
    """A field of the pod itself."""

    field_path: Annotated[str, StringConstraints(min_length=1, max_length=256)] = Field(
        description="e.g. metadata.name, status.podIP."
    )
    api_version: str | None = Field(default=None, max_length=32, description="Default: v1.")


class ResourceFieldReference(ApiModel):
    """A resource request or limit of the runtime container."""

    resource: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="e.g. limits.memory."
    )
    container_name: str | None = Field(default=None, max_length=63, description="runtime.")
    divisor: Quantity | None = Field(default=None, description="Unit of the value.")


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from: exactly one of these."""

    secret_key_ref: KeyReference | None = Field(
        default=None, description="A key of a Secret of the pool's namespace."
    )
    config_map_key_ref: KeyReference | None = Field(
        default=None, description="A key of a ConfigMap of the pool's namespace."
    )
    field_ref: FieldReference | None = Field(default=None, description="A field of the pod.")
    resource_field_ref: ResourceFieldReference | None = Field(
        default=None, description="A resource of the container."
    )

    RULES: ClassVar[tuple[Rule[Any], ...]] = (
        Rule["EnvVarSource"](
            cel=(
                "[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef), "
                "has(self.resourceFieldRef)].filter(x, x).size() == 1"
            ),
            message=(
                "set exactly one of secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef"
            ),
            violated=lambda s: (
                sum(
                    ref is not None
                    for ref in (
                        s.secret_key_ref,
                        s.config_map_key_ref,
                        s.field_ref,
                        s.resource_field_ref,
                    )
                )
                != 1
            ),
        ),
    )


class EnvVar(ApiModel):
    """An environment variable of the runtime container."""

    name: Annotated[
        str, StringConstraints(min_length=1, max_length=256, pattern=ENV_NAME_PATTERN)
    ] = Field(description="The variable's name.")
    value: str | None = Field(default=None, max_length=32768, description="A literal value.")
    value_from: EnvVarSource | None = Field(
        default=None, description="Or where the value comes from."
    )

    RULES: ClassVar[tuple[Rule[Any], ...]] = (
        Rule["EnvVar"](
            cel="!has(self.value) || !has(self.valueFrom)",
            message="set value or valueFrom, not both",
            violated=lambda e: e.value is not None and e.value_from is not None,
            field_path=".valueFrom",
        ),
        Rule["EnvVar"](
            cel=f"self.name != '{constants.ENV_POOL_TOKEN}'",
            message=(
                f"{constants.ENV_POOL_TOKEN} is the operator's: it carries the pool token "
                "from the pool's Secret"
            ),
            violated=lambda e: e.name == constants.ENV_POOL_TOKEN,
            field_path=".name",
        ),
    )


ResourceMap = dict[Key, Quantity]


class ResourceRequirements(ApiModel):
    """CPU, memory and other resources of the runtime container (its GPU is the operator's)."""

    requests: ResourceMap | None = Field(
        default=None, max_length=16, description="Resources requested, e.g. cpu, memory."
    )
    limits: ResourceMap | None = Field(
        default=None, max_length=16, description="Resource limits, e.g. memory."
    )

    RULES: ClassVar[tuple[Rule[Any], ...]] = ()  # filled below


def _no_gpu_rule(wire: str) -> Rule[ResourceRequirements]:
    gpu = constants.RESOURCE_GPU

    def violated(r: ResourceRequirements) -> bool:
        return gpu in (getattr(r, wire) or {})

    return Rule(
        cel=f"!has(self.{wire}) || !('{gpu}' in self.{wire})",
        message=f"{gpu} is the operator's: every runtime pod gets exactly one GPU",
        violated=violated,
        field_path=f".{wire}",
    )


ResourceRequirements.RULES = (
    key_format_rule("requests", "requests"),
    key_format_rule("limits", "limits"),
    _no_gpu_rule("requests"),
    _no_gpu_rule("limits"),
)


class RuntimeContainer(ApiModel):
    """Changes to the runtime container (the only container of a runtime pod)."""

    name: str = Field(
        max_length=63,
        description=f"The container to change: always {constants.RUNTIME_CONTAINER}.",
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="CPU and memory requests and limits (the GPU is the operator's)."
    )
    env: list[EnvVar] | None = Field(
        default=None,
        max_length=64,
        description=(
            "Extra environment variables. valueFrom may read Secrets and ConfigMaps of the "
            "pool's namespace (e.g. HF_TOKEN for gated weights), as a Deployment's pods may."
        ),
    )
    image: str | None = refused("set spec.runtime.image")
    command: list[str] | None = refused("the operator runs the runtime with the pool's settings")
    args: list[str] | None = refused("the operator runs the runtime with the pool's settings")
    security_context: Opaque | None = refused(
        "runtime pods run under the operator's restricted security context"
    )
    volume_mounts: list[Opaque] | None = refused(
        "weights come from spec.model.source (pvc://claim/path mounts a claim read-only)"
    )

    RULES: ClassVar[tuple[Rule[Any], ...]] = ()  # filled below


RuntimeContainer.RULES = (
    Rule["RuntimeContainer"](
        cel=f"self.name == '{constants.RUNTIME_CONTAINER}'",
        message=(
            f"a pool's pods run one container, {constants.RUNTIME_CONTAINER}: "
            f"name it {constants.RUNTIME_CONTAINER}"
        ),
        violated=lambda c: c.name != constants.RUNTIME_CONTAINER,
        field_path=".name",
    ),
    Rule["RuntimeContainer"](
        cel="!has(self.env) || self.env.all(e, self.env.exists_one(f, f.name == e.name))",
        message="env names must be unique",
        violated=lambda c: len({e.name for e in c.env or []}) != len(c.env or []),
        field_path=".env",
    ),
    *refusal_rules(RuntimeContainer),
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
