"""Fixtures for the operator's tests against the sandbox.

The operator runs as a real process (``voicefleet operator run``) with its own
ServiceAccount's token and the RBAC from ``voicefleet.operator.rbac`` - never as cluster
admin - so every test also checks that the RBAC is enough. One operator serves the whole
session; tests that restart or kill it bring it back.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.fixtures.sandbox import Cluster
from tests.operator.harness import (
    OPERATOR_NAMESPACE,
    HarnessError,
    Operator,
    install_rbac,
    pool_token,
    service_account_kubeconfig,
)

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
