"""Fixtures for the operator's tests against the sandbox.

The operator runs as a real process (``voicefleet operator run``) with its own
ServiceAccount's token and the RBAC from ``voicefleet.operator.rbac`` - never as cluster
admin - so every test also checks that the RBAC is enough. One operator serves the whole
session; tests that restart or kill it bring it back.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import pytest
from kubernetes import client

from tests.fixtures.sandbox import Cluster
from tests.operator import kit
from voicefleet.testing.kube_admin import (
    OPERATOR_NAMESPACE,
    install_rbac,
    pool_token,
    service_account_kubeconfig,
)
from voicefleet.testing.operators import Operator
from voicefleet.testing.polling import HarnessError

__all__ = ["OPERATOR_NAMESPACE", "Operator", "pool_token"]


@pytest.fixture(scope="session")
def operator_rbac(kube_api: client.ApiClient, voicefleet_crds: list[str]) -> None:
    """The operator's namespace, ServiceAccount, RBAC and peering object, applied as admin."""
    install_rbac(kube_api)


@pytest.fixture(scope="session")
def operator(
    sandbox: Cluster,
    kube_api: client.ApiClient,
    operator_rbac: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Operator]:
    """The operator, running as its ServiceAccount for the whole session."""
    folder = tmp_path_factory.mktemp("operator")
    kubeconfig = service_account_kubeconfig(sandbox.kubeconfig, kube_api, folder / "kubeconfig")
    running = Operator(kubeconfig, folder)
    try:
        running.start()
    except HarnessError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield running
    running.stop()
    problems = running.tracebacks()
    assert not problems, "tracebacks in the operator log:\n" + "\n".join(problems)


@pytest.fixture
def live_operator(operator: Operator) -> Operator:
    """The session's operator, restarted first if an earlier test left it stopped."""
    if operator.process is None or operator.process.poll() is not None:
        try:
            operator.start()
        except HarnessError as exc:
            pytest.fail(str(exc), pytrace=False)
    return operator


@pytest.fixture
def restore_nodes(kube_api: client.ApiClient) -> Iterator[Callable[[str], client.V1Node]]:
    """``remember(name)``: the node as it is now; put back as it was after the test."""
    core = client.CoreV1Api(kube_api)
    saved: dict[str, client.V1Node] = {}

    def remember(name: str) -> client.V1Node:
        node = core.read_node(name)
        saved.setdefault(name, copy.deepcopy(node))
        return node

    yield remember
    for name, node in saved.items():
        body = kube_api.sanitize_for_serialization(node)
        try:
            live = core.read_node(name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            meta = body["metadata"]
            for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
                meta.pop(key, None)
            core.create_node(body)
            continue
        labels = {
            k: None for k in live.metadata.labels or {} if k not in body["metadata"]["labels"]
        }
        core.patch_node(
            name,
            {
                "metadata": {"labels": {**body["metadata"]["labels"], **labels}},
                "spec": {
                    "taints": body["spec"].get("taints") or None,
                    "unschedulable": body["spec"].get("unschedulable"),
                },
            },
        )


@pytest.fixture
def all_nodes_restored(
    kube_api: client.ApiClient, restore_nodes: Callable[[str], client.V1Node]
) -> Iterator[list[str]]:
    """Every node's name; each is Ready again after the test, whatever it did."""
    core = client.CoreV1Api(kube_api)
    names = [n.metadata.name for n in core.list_node().items]
    for name in names:
        restore_nodes(name)
    yield names
    for name in names:
        kit.set_node_ready(core, name, True)
