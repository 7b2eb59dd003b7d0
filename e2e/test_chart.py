"""The Helm chart against the real control plane: lint, server-side dry run, install, uninstall."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.fixtures.sandbox import Cluster, wait_until
from voicefleet.sandbox import binaries

pytestmark = pytest.mark.sandbox

CHART = Path(__file__).resolve().parents[1] / "charts" / "voicefleet"
RELEASE = "vf"


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
        "--set=watchNamespaces={voice,support}",
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
