"""``sfc-k8s uninstall`` against a real local cluster (API server, node runtime, one node).

What the local API server serves of ``kubectl kustomize deploy/`` is applied (it has no
PriorityClass or PodDisruptionBudget; the controller Deployment gets 0 replicas so that no pod
runs the image), plus a chain and CrossConnections whose finalizers stand for two agents: one
of a node that does not exist (gone), one of the Ready node-1 whose agent never answers.

Covers: ``--dry-run`` reports what it would delete and changes nothing; the real run deletes the
chain and the CrossConnections, removes the gone agent's finalizer at once and the silent one's
after ``--timeout``, naming the node; then nothing of ours is left (CRDs, cluster roles and
bindings, ClusterKopfPeering object, namespace and everything in it) while Kopf's peering CRDs
(shared) stay; a second run finds everything already gone and succeeds.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sfc_k8s.api.nodes import agent_finalizer
from sfc_k8s.operator import uninstall
from tests.fixtures.chains import web_chain
from tests.integration.local.cluster import Cluster, wait_for

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[3]
UNSERVED = ("PriorityClass", "PodDisruptionBudget")


def kubectl(cluster: Cluster, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(cluster.layout.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def names(cluster: Cluster, resource: str) -> set[str]:
    out = kubectl(cluster, "get", resource, "-A", "-o", "json")
    return {item["metadata"]["name"] for item in json.loads(out)["items"]}


def install(cluster: Cluster) -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "deploy")], capture_output=True, text=True, check=True
    ).stdout
    objects = [o for o in yaml.safe_load_all(built) if o and o["kind"] not in UNSERVED]
    for obj in objects:
        if obj["kind"] == "Deployment":
            obj["spec"]["replicas"] = 0
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    kubectl(cluster, "apply", "-f", "-", stdin=yaml.safe_dump_all(crds))
    kubectl(cluster, "wait", "--for=condition=Established", "crd", "--all", "--timeout=30s")
    rest = [o for o in objects if o["kind"] != "CustomResourceDefinition"]
    kubectl(cluster, "apply", "-f", "-", stdin=yaml.safe_dump_all(rest))
    peering = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering"}
    peering["metadata"] = {"name": "sfc-k8s-controller"}  # type: ignore[assignment]
    kubectl(cluster, "apply", "-f", "-", stdin=yaml.safe_dump(peering))


def cross_connection(name: str, namespace: str, finalizer: str) -> dict[str, Any]:
    side = {"function": "f", "interface": "eth1", "endpoints": []}
    return {
        "apiVersion": "sfc-k8s.io/v1alpha1",
        "kind": "CrossConnection",
        "metadata": {"name": name, "namespace": namespace, "finalizers": [finalizer]},
        "spec": {"chain": "web", "link": name, "a": side, "b": side},
    }


def ours_left(cluster: Cluster) -> list[str]:
    left = [f"crd/{n}" for n in names(cluster, "crd") if n.endswith(".sfc-k8s.io")]
    left += [f"clusterrole/{n}" for n in names(cluster, "clusterroles") if "sfc-k8s" in n]
    left += [
        f"clusterrolebinding/{n}" for n in names(cluster, "clusterrolebindings") if "sfc-k8s" in n
    ]
    left += [f"clusterkopfpeering/{n}" for n in names(cluster, "clusterkopfpeerings")]
    left += [f"namespace/{n}" for n in names(cluster, "namespaces") if n == "sfc-system"]
    return left


def test_uninstall_leaves_nothing_of_ours(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    install(cluster)
    namespace = cluster.namespace()
    chain = web_chain(namespace=namespace)
    del chain["metadata"]["uid"], chain["metadata"]["generation"]
    gone, silent = agent_finalizer("node-that-left"), agent_finalizer("node-1")
    objects = [chain, cross_connection("xc-gone", namespace, gone),
               cross_connection("xc-silent", namespace, silent)]  # fmt: skip
    kubectl(cluster, "apply", "-f", "-", stdin=yaml.safe_dump_all(objects))
    kubeconfig = str(cluster.layout.kubeconfig)

    assert uninstall.main(["--kubeconfig", kubeconfig, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "servicefunctionchains/web: would delete" in out
    assert "crossconnections/xc-gone: would delete" in out
    assert "customresourcedefinitions/crossconnections.sfc-k8s.io: would delete" in out
    assert "namespaces/sfc-system: would delete" in out
    assert "dry run: nothing changed" in out
    assert names(cluster, "sfc") == {"web"}
    assert names(cluster, "xc") == {"xc-gone", "xc-silent"}

    assert uninstall.main(["--kubeconfig", kubeconfig, "--timeout", "2"]) == 0
    out = capsys.readouterr().out
    assert f"{namespace}/xc-gone: removed {gone} (agent gone)" in out
    assert f"{namespace}/xc-silent: removed {silent} (timed out)" in out
    assert "links may remain pinned on node(s) whose agent" in out
    assert "node-1" in out
    wait_for("nothing of sfc-k8s left", lambda: not ours_left(cluster) or None, 30)
    kopf = {n for n in names(cluster, "crd") if n.endswith(".kopf.dev")}
    assert kopf == set(uninstall.KOPF_CRDS)

    assert uninstall.main(["--kubeconfig", kubeconfig]) == 0
    out = capsys.readouterr().out
    assert "servicefunctionchains: not served (CRD already gone)" in out
    assert "clusterroles/sfc-k8s-agent: already gone" in out
    assert "sfc-k8s uninstalled" in out
