"""Scheduling fields a template may set, typed as in a pod spec: node and pod affinity,
tolerations, topology spread. They decide where the pods go, never what they may do."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from voicefleet.api.formats import MAX_LIST, Key, LabelValue, ObjectName
from voicefleet.api.model import ApiModel

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
