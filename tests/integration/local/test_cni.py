"""Node runtime: CNI the way Multus does it, with the real plugin binaries.

Covers: every entry of the ``k8s.v1.cni.cncf.io/networks`` annotation (``name@ifname``,
``name``, the JSON list form) attached by fetching its NetworkAttachmentDefinition and running
the plugin from CNI_PATH inside the node's namespace; the ``network-status`` annotation; DEL on
deletion (IPAM leases released); the ``CNI_ARGS`` Multus passes (sfc-cni names the host veth
from ``K8S_POD_UID``); a failing plugin or a missing NetworkAttachmentDefinition gives a
``FailedCreatePodSandBox`` event and keeps the pod Pending while other pods run, and the pod
starts once its network is fixed.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from sfc_k8s.api.attachments import NETWORK_STATUS_ANNOTATION
from sfc_k8s.api.naming import host_ifname
from sfc_k8s.local.node.cni import NETWORKS_ANNOTATION
from tests.integration.local.cluster import Cluster, phase, ready, wait_for

NAD_PATH = "/apis/k8s.cni.cncf.io/v1/namespaces/{ns}/network-attachment-definitions"


def _nad(cluster: Cluster, ns: str, name: str, config: dict[str, object]) -> None:
    cluster.kube.request(
        "POST",
        NAD_PATH.format(ns=ns),
        body={
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"config": json.dumps(config)},
        },
    )


def _ptp(name: str, subnet: str, data_dir: Path) -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "type": "ptp",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": str(data_dir)},
    }


def _sleeper(annotation: str | None = None) -> tuple[dict[str, object], dict[str, object]]:
    spec = {
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "main", "command": ["sleep", "1000"]}],
    }
    meta = {"annotations": {NETWORKS_ANNOTATION: annotation}} if annotation else {}
    return spec, meta


def _addresses(netns: str) -> dict[str, str]:
    out = subprocess.run(
        ["ip", "-n", netns, "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[1]: line.split()[3].split("/")[0] for line in out.splitlines()}


def test_networks_annotation_attaches_each_network(cluster: Cluster, tmp_path: Path) -> None:
    ns = cluster.namespace()
    _nad(cluster, ns, "data-a", _ptp("data-a", "10.99.1.0/24", tmp_path / "ipam"))
    _nad(cluster, ns, "data-b", _ptp("data-b", "10.99.2.0/24", tmp_path / "ipam"))
    spec, meta = _sleeper(f"data-a@data0, {ns}/data-b")
    cluster.create_pod(ns, "multi", spec, **meta)
    spec, meta = _sleeper(json.dumps([{"name": "data-a", "interface": "in0"}]))
    cluster.create_pod(ns, "jsonform", spec, **meta)

    pod = cluster.wait_pod(ns, "multi", ready)
    addrs = _addresses(cluster.netns(pod))
    assert addrs["data0"].startswith("10.99.1.") and addrs["net2"].startswith("10.99.2.")
    assert addrs["eth0"] == pod["status"]["podIP"]
    status = json.loads(pod["metadata"]["annotations"][NETWORK_STATUS_ANNOTATION])
    by_if = {entry["interface"]: entry for entry in status}
    assert by_if["eth0"].get("default") is True
    assert by_if["data0"]["name"] == f"{ns}/data-a" and by_if["data0"]["ips"] == [addrs["data0"]]
    assert by_if["net2"]["name"] == f"{ns}/data-b" and by_if["net2"]["ips"] == [addrs["net2"]]

    other = cluster.wait_pod(ns, "jsonform", ready)
    assert _addresses(cluster.netns(other))["in0"].startswith("10.99.1.")
    leases = lambda: sorted(p.name for p in (tmp_path / "ipam").rglob("10.99.*"))  # noqa: E731
    assert len(leases()) == 3

    for name in ("multi", "jsonform"):
        cluster.delete_pod(ns, name)
    for name in ("multi", "jsonform"):
        cluster.wait_gone(ns, name)
    assert leases() == [], "CNI DEL released every IPAM lease"


def test_sfc_cni_gets_the_pod_uid_in_cni_args(cluster: Cluster) -> None:
    ns = cluster.namespace()
    _nad(
        cluster,
        ns,
        "nf-in",
        {"cniVersion": "1.0.0", "name": "nf-in", "type": "sfc-cni", "macSeed": f"{ns}/nf/eth1"},
    )
    spec, meta = _sleeper("nf-in@eth1")
    cluster.create_pod(ns, "nf", spec, **meta)
    pod = cluster.wait_pod(ns, "nf", ready)
    node_ns = cluster.layout.node_netns("node-1")
    host_if = host_ifname(pod["metadata"]["uid"], "eth1")
    links = subprocess.run(
        ["ip", "-n", node_ns, "-o", "link", "show"], capture_output=True, text=True, check=True
    ).stdout
    assert f" {host_if}@" in links, f"host veth {host_if} in the node namespace"
    cluster.delete_pod(ns, "nf")
    cluster.wait_gone(ns, "nf")
    links = subprocess.run(
        ["ip", "-n", node_ns, "-o", "link", "show"], capture_output=True, text=True, check=True
    ).stdout
    assert host_if not in links


def test_cni_failure_is_an_event_and_the_pod_stays_pending(
    cluster: Cluster, tmp_path: Path
) -> None:
    ns = cluster.namespace()
    _nad(
        cluster,
        ns,
        "broken",
        {"cniVersion": "1.0.0", "name": "broken", "type": "sfc-test-no-such-plugin"},
    )
    spec, meta = _sleeper("broken")
    cluster.create_pod(ns, "victim", spec, **meta)
    spec, meta = _sleeper("not-defined")
    cluster.create_pod(ns, "orphan", spec, **meta)
    spec, _ = _sleeper()
    cluster.create_pod(ns, "bystander", spec)

    cluster.wait_pod(ns, "bystander", ready)

    def failed(pod: str, text: str) -> bool:
        return any(
            e["reason"] == "FailedCreatePodSandBox"
            and e["type"] == "Warning"
            and text in e["message"]
            for e in cluster.events(ns, pod)
        )

    wait_for("victim's event", lambda: failed("victim", "sfc-test-no-such-plugin"))
    wait_for("orphan's event", lambda: failed("orphan", f"{ns}/not-defined not found"))
    for name in ("victim", "orphan"):
        pod = cluster.pod(ns, name)
        assert pod is not None and phase(pod) == "Pending" and not ready(pod)
        waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"]
        assert waiting["reason"] == "ContainerCreating"

    # Fix the network: the runtime retries with back-off and the pod starts.
    cluster.kube.request(
        "PATCH",
        NAD_PATH.format(ns=ns) + "/broken",
        body={"spec": {"config": json.dumps(_ptp("broken", "10.99.3.0/24", tmp_path))}},
        content_type="application/merge-patch+json",
    )
    cluster.wait_pod(ns, "victim", ready, timeout=40)
    for name in ("victim", "orphan", "bystander"):
        cluster.delete_pod(ns, name)
    for name in ("victim", "orphan", "bystander"):
        cluster.wait_gone(ns, name)
