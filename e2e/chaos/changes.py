"""What a chaos run does to the cluster, each change remembered until it is put back:
the run's namespace and pools, nodes made NotReady, signalled or added, and a process
frozen."""

from __future__ import annotations

import ipaddress
import os
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

from e2e import drill, fleet
from e2e.chaos.settings import NAMESPACE, POOL, manifest
from e2e.chaos.view import PoolView
from voicefleet import constants
from voicefleet.sandbox import nodes
from voicefleet.testing import kube_admin, polling


@dataclass
class Changes:
    cluster: fleet.Cluster
    view: PoolView
    interrupted: list[str] = field(default_factory=list)  # spot nodes signalled
    not_ready: list[str] = field(default_factory=list)  # nodes made NotReady
    added: list[str] = field(default_factory=list)  # nodes added

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.cluster.api)

    @property
    def objects(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.cluster.api)

    def namespace(self) -> None:
        """The run's namespace, new (an earlier run's may still be terminating)."""

        def created() -> bool:
            try:
                self.core.create_namespace(
                    client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE))
                )
            except client.ApiException as exc:
                if exc.status == 409:
                    return False
                raise
            return True

        polling.wait_for(created, 120, f"namespace {NAMESPACE} to be made afresh")
        polling.wait_for(
            lambda: (
                self.core.list_namespaced_service_account(
                    NAMESPACE, field_selector="metadata.name=default"
                ).items
            ),
            60,
            f"the default service account in {NAMESPACE}",
        )

    def apply(self, name: str, spec: dict[str, Any]) -> None:
        kube_admin.apply_manifest(self.cluster.api, manifest(name, spec))

    def set_target(self, target: int) -> None:
        self.objects.patch_namespaced_custom_object(
            constants.GROUP,
            constants.VERSION,
            NAMESPACE,
            constants.PLURAL,
            POOL,
            {"spec": {"sessions": {"target": target}}},
        )

    def delete_pool(self, name: str) -> None:
        """Pool ``name`` deleted, or already gone."""
        try:
            self.objects.delete_namespaced_custom_object(
                constants.GROUP, constants.VERSION, NAMESPACE, constants.PLURAL, name
            )
        except client.ApiException as exc:
            if exc.status != 404:
                raise

    def set_ready(self, names: Sequence[str], *, ready: bool) -> None:
        """NotReady (or Ready again) as a kubelet reports it, node by node."""
        for name in names:
            if not ready:
                self.not_ready.append(name)
            kube_admin.set_node_ready(self.core, name, ready)
            if ready:
                self.not_ready.remove(name)

    def add_nodes(self, group: nodes.NodeGroup) -> list[str]:
        """``group``'s nodes, each with a /24 of the pod network no node uses; once Ready."""
        existing = self.core.list_node().items
        cidrs = {ipaddress.ip_network(n.spec.pod_cidr) for n in existing if n.spec.pod_cidr}
        network = next(iter(cidrs)).supernet(new_prefix=16)
        free = (s for s in list(network.subnets(new_prefix=24))[1:] if s not in cidrs)
        made = []
        for i in range(group.count):
            fake = nodes.FakeNode(f"{group.prefix}-{i}", group, str(next(free)))
            self.core.create_node(nodes.node_manifest(fake))
            made.append(fake.name)
            self.added.append(fake.name)
        polling.wait_for(lambda: self.view.nodes_clear(made), 60, "the added nodes to be Ready")
        return made

    def remove_nodes(self, names: Sequence[str]) -> None:
        for name in list(names):
            self.core.delete_node(name)
            self.added.remove(name)

    def restore_nodes(self) -> None:
        """Every node Ready and without signals again, and the added ones gone."""
        for name in list(self.not_ready):
            kube_admin.set_node_ready(self.core, name, True)
        for name in self.interrupted:
            drill.clear_node(self.cluster, name)
        self.remove_nodes(self.added)


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    """The process frozen (SIGSTOP) until the block ends, whatever happens in it."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
