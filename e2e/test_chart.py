"""The Helm chart against the real control plane: lint, rendering (RBAC per mode, leader
election), server-side dry run, install, uninstall, and the operator's replicas in
``watchNamespaces`` mode: they reconcile there, and can touch nothing elsewhere."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from e2e import fleet
from tests.fixtures.sandbox import Cluster, wait_until
from voicefleet import constants
from voicefleet.sandbox import binaries
from voicefleet.testing import kube_admin
from voicefleet.testing.kube_admin import service_account_kubeconfig

pytestmark = pytest.mark.sandbox

CHART = Path(__file__).resolve().parents[1] / "charts" / "voicefleet"
RELEASE = "vf"
OPERATOR = "vf-voicefleet-operator"  # the chart's names for release vf


def helm(cluster: Cluster | None, *args: str) -> subprocess.CompletedProcess[str]:
    found = binaries.cached("helm")
    if found is None:
        pytest.fail("no helm: run e2e/build-sandbox.sh", pytrace=False)
    kube = [f"--kubeconfig={cluster.kubeconfig}"] if cluster else []
    return subprocess.run(
        [str(found), *kube, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_helm_lint_is_clean() -> None:
    done = helm(None, "lint", "--strict", str(CHART))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


def _render(*values: str) -> list[dict[str, Any]]:
    rendered = helm(None, "template", RELEASE, str(CHART), "--namespace=ops", *values)
    assert rendered.returncode == 0, rendered.stderr
    return [d for d in yaml.safe_load_all(rendered.stdout) if d]


def _kinds(docs: list[dict[str, Any]], kind: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (d["metadata"].get("namespace", ""), d["metadata"]["name"]): d
        for d in docs
        if d["kind"] == kind
    }


def _resources(role: dict[str, Any]) -> set[str]:
    return {r for rule in role["rules"] for r in rule["resources"]}


POOL_RESOURCES = {"pods", "secrets", "services", "poddisruptionbudgets", "configmaps", "events"}


def test_by_default_one_cluster_role_holds_the_pool_rights_and_replicas_elect_a_leader() -> None:
    docs = _render()
    (role,) = _kinds(docs, "ClusterRole").values()
    assert POOL_RESOURCES | {constants.PLURAL, "nodes"} <= _resources(role)
    assert set(_kinds(docs, "Role")) == {
        ("ops", "vf-voicefleet-operator-key"),
        ("ops", "vf-voicefleet-operator-leader"),
    }
    assert set(_kinds(docs, "Lease")) == {("ops", constants.OPERATOR_LEASE)}
    (deployment,) = _kinds(docs, "Deployment").values()
    assert deployment["spec"]["replicas"] == 2
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--leader-elect-identity=$(POD_NAME)" in args
    assert "--leader-elect-lease-duration=15" in args
    assert not [a for a in args if "peering" in a or "standalone" in a or "priority" in a]
    assert not [d for d in docs if d["apiVersion"].startswith("kopf.dev/")]


def test_watch_namespaces_get_roles_and_the_cluster_role_only_cluster_reads() -> None:
    docs = _render("--set=watchNamespaces={tenant-a,tenant-b}")
    (role,) = _kinds(docs, "ClusterRole").values()
    assert _resources(role) == {"nodes", "customresourcedefinitions", "namespaces"}
    assert {v for rule in role["rules"] for v in rule["verbs"]} == {"get", "list", "watch"}
    roles = _kinds(docs, "Role")
    for watched in ("tenant-a", "tenant-b"):
        assert POOL_RESOURCES | {constants.PLURAL} <= _resources(
            roles[(watched, "vf-voicefleet-operator")]
        )
    assert set(_kinds(docs, "RoleBinding")) == set(roles)
    (deployment,) = _kinds(docs, "Deployment").values()
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {"--namespace=tenant-a", "--namespace=tenant-b"} <= set(args)


def test_leader_timings_that_could_make_two_leaders_fail_the_render() -> None:
    done = helm(
        None, "template", RELEASE, str(CHART), "--set=leaderElection.renewDeadlineSeconds=15"
    )
    assert done.returncode != 0
    assert "leaseDurationSeconds must be longer than leaderElection.renewDeadlineSeconds" in (
        done.stderr
    )


def _gitops_values() -> dict[str, dict[str, object]]:
    examples = CHART.parents[1] / "examples" / "gitops"
    argo = yaml.safe_load((examples / "argocd-application.yaml").read_text())
    flux = [
        d
        for d in yaml.safe_load_all((examples / "flux-helmrelease.yaml").read_text())
        if d["kind"] == "HelmRelease"
    ]
    return {
        "argocd-application.yaml": argo["spec"]["source"]["helm"]["valuesObject"],
        "flux-helmrelease.yaml": flux[0]["spec"]["values"],
    }


@pytest.mark.parametrize("example", ["argocd-application.yaml", "flux-helmrelease.yaml"])
def test_gitops_examples_values_render_the_chart(example: str, tmp_path: Path) -> None:
    # Argo CD and Flux hand these values to the chart: the schema must accept them.
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(_gitops_values()[example]))
    rendered = helm(None, "template", RELEASE, str(CHART), f"--values={values}")
    assert rendered.returncode == 0, rendered.stderr
    deployment = next(
        d for d in yaml.safe_load_all(rendered.stdout) if d and d["kind"] == "Deployment"
    )
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=voice" in args
    assert deployment["spec"]["replicas"] == 2


def test_rendered_chart_passes_server_side_dry_run(
    sandbox: Cluster, voicefleet_crds: list[str], namespace: str
) -> None:
    every_option = [
        "--set=dashboards.enabled=true",
        # Watched namespaces get Roles, so they must exist: the test's own.
        f"--set=watchNamespaces={{{namespace}}}",
        '--set-json=prices={"gpus":{"NVIDIA-H100-80GB-HBM3":{"spotPerHour":0.7}}}',
        "--set=interruption.extraTaints={example.com/going-away}",
    ]
    rendered = helm(
        None,
        "template",
        RELEASE,
        str(CHART),
        f"--namespace={namespace}",
        *every_option,
    )
    assert rendered.returncode == 0, rendered.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(rendered.stdout) if d]
    assert {"Deployment", "ClusterRole", "Role", "ServiceAccount", "ConfigMap"} <= set(kinds)
    applied = subprocess.run(
        [sandbox.kubectl, f"--kubeconfig={sandbox.kubeconfig}", "apply", "--dry-run=server",
         "-f", "-"],
        input=rendered.stdout, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    assert "deployment.apps/vf-voicefleet-operator created (server dry run)" in applied.stdout


def test_install_creates_the_operator_and_uninstall_removes_it(
    sandbox: Cluster, kube_api: client.ApiClient, voicefleet_crds: list[str], namespace: str
) -> None:
    done = helm(sandbox, "install", RELEASE, str(CHART), f"--namespace={namespace}", "--wait=false")
    assert done.returncode == 0, done.stderr
    assert "kubectl apply" in done.stdout  # NOTES.txt tells the user what to apply next
    apps = client.AppsV1Api(kube_api)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    deployment = apps.read_namespaced_deployment("vf-voicefleet-operator", namespace)
    container = deployment.spec.template.spec.containers[0]
    assert container.security_context.read_only_root_filesystem
    assert not container.security_context.allow_privilege_escalation
    assert deployment.spec.template.spec.security_context.run_as_non_root
    role = rbac.read_cluster_role("vf-voicefleet-operator")
    secret_rules = [r for r in role.rules if "secrets" in (r.resources or [])]
    assert all(set(r.verbs) <= {"create", "patch"} for r in secret_rules)
    node_rules = [r for r in role.rules if "nodes" in (r.resources or [])]
    assert all(set(r.verbs) <= {"get", "list", "watch"} for r in node_rules)

    done = helm(sandbox, "uninstall", RELEASE, f"--namespace={namespace}")
    assert done.returncode == 0, done.stderr
    wait_until(
        lambda: not apps.list_namespaced_deployment(namespace).items,
        what="the operator Deployment to be removed",
    )
    names = [r.metadata.name for r in rbac.list_cluster_role().items]
    assert "vf-voicefleet-operator" not in names


def test_watch_namespaces_with_two_replicas_reconcile_there_and_touch_nothing_elsewhere(
    sandbox: Cluster,
    kube_api: client.ApiClient,
    voicefleet_crds: list[str],
    namespace: str,
    tmp_path: Path,
) -> None:
    core = client.CoreV1Api(kube_api)
    watched, unwatched = f"{namespace}-watched", f"{namespace}-other"
    for name in (watched, unwatched):  # a watched namespace must exist before the install
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    cluster = fleet.Cluster(sandbox.kubeconfig, sandbox.kubectl, str(binaries.cached("helm")),
                            kube_api)  # fmt: skip
    install = helm(sandbox, "install", RELEASE, str(CHART), f"--namespace={namespace}",
                   f"--set=watchNamespaces={{{watched}}}", "--wait=false")  # fmt: skip
    assert install.returncode == 0, install.stderr
    replicas = fleet.start_operators(cluster, tmp_path, release=RELEASE, namespace=namespace)
    try:
        assert len(replicas.operators) == 2
        leader = replicas.leader()
        (standby,) = replicas.standbys()
        pool = {"apiVersion": constants.API_VERSION, "kind": constants.KIND,
                "spec": {"sessions": {"target": 40}}}  # fmt: skip
        objects = client.CustomObjectsApi(kube_api)
        for ns in (watched, unwatched):
            body = {**pool, "metadata": {"name": "tenant", "namespace": ns}}
            objects.create_namespaced_custom_object(
                constants.GROUP, constants.VERSION, ns, constants.PLURAL, body
            )
        fleet.wait_ready(cluster, watched, "tenant")
        done = leader.reconciles()
        wait_until(lambda: leader.reconciles() >= done + 3, what="three more reconciles")
        assert kube_admin.pool_pods(kube_api, watched, "tenant")
        # The unwatched namespace's pool: never seen, never touched.
        assert "status" not in kube_admin.get_pool(kube_api, unwatched, "tenant")
        assert kube_admin.pool_pods(kube_api, unwatched, "tenant") == []
        assert leader.writes(unwatched) == 0
        assert standby.reconciles() == 0 and standby.writes(watched) == 0

        # And it could not, had it tried: as the chart's ServiceAccount, a pod there is
        # refused; in the watched namespace the same request is allowed (server dry run).
        kubeconfig = service_account_kubeconfig(
            sandbox.kubeconfig, kube_api, tmp_path / "sa.kubeconfig",
            account=OPERATOR, namespace=namespace,
        )  # fmt: skip
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
               "spec": {"containers": [{"name": "c", "image": "busybox"}]}}  # fmt: skip
        for ns, allowed in ((watched, True), (unwatched, False)):
            tried = subprocess.run(
                [sandbox.kubectl, f"--kubeconfig={kubeconfig}", "create", "--dry-run=server",
                 f"--namespace={ns}", "-f", "-"],
                input=yaml.safe_dump(pod), capture_output=True, text=True, timeout=60,
                check=False,
            )  # fmt: skip
            assert (tried.returncode == 0) == allowed, (ns, tried.stdout, tried.stderr)
            if not allowed:
                assert "forbidden" in tried.stderr
        for verb in ("create", "delete", "patch"):
            review = client.V1SubjectAccessReview(
                spec=client.V1SubjectAccessReviewSpec(
                    user=f"system:serviceaccount:{namespace}:{OPERATOR}",
                    resource_attributes=client.V1ResourceAttributes(
                        verb=verb, resource="pods", namespace=unwatched
                    ),
                )
            )
            reviewed = client.AuthorizationV1Api(kube_api).create_subject_access_review(review)
            assert not reviewed.status.allowed, verb
        assert not replicas.tracebacks(), replicas.tracebacks()
    finally:
        replicas.stop()
        helm(sandbox, "uninstall", RELEASE, f"--namespace={namespace}")
        for name in (watched, unwatched):
            core.delete_namespace(name)


def test_the_chart_works_as_a_subchart_and_its_names_and_account_can_be_chosen() -> None:
    # `global` is what a parent chart passes down; the schema used to refuse it.
    docs = _render("--set=global.imageRegistry=registry.example.com")
    assert _kinds(docs, "Deployment")
    named = _render("--set=fullnameOverride=voice-ops")
    assert set(_kinds(named, "Deployment")) == {("ops", "voice-ops-operator")}
    renamed = _render("--set=nameOverride=fleet")
    assert set(_kinds(renamed, "Deployment")) == {("ops", "vf-fleet-operator")}
    # An existing ServiceAccount: none is created, the Deployment and RBAC use it.
    existing = _render("--set=serviceAccount.create=false", "--set=serviceAccount.name=ops-sa")
    assert _kinds(existing, "ServiceAccount") == {}
    (deployment,) = _kinds(existing, "Deployment").values()
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "ops-sa"
    (binding,) = _kinds(existing, "ClusterRoleBinding").values()
    assert binding["subjects"][0]["name"] == "ops-sa"
    refused = helm(None, "template", RELEASE, str(CHART), "--set=serviceAccount.create=false")
    assert refused.returncode != 0 and "serviceAccount.name must name" in refused.stderr


def test_pools_that_name_no_image_get_the_runtime_of_the_charts_version() -> None:
    (deployment,) = _kinds(_render(), "Deployment").values()
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--runtime-image={constants.DEFAULT_RUNTIME_IMAGE}" in args
    (mine,) = _kinds(_render("--set=runtimeImage=registry.example.com/rt:1"), "Deployment").values()
    assert (
        "--runtime-image=registry.example.com/rt:1"
        in mine["spec"]["template"]["spec"]["containers"][0]["args"]
    )
