"""The built-in metrics provider behind an APIService, read with the real kubectl and the HPA.

One local API server (its HPA controller syncing every 0.2 s and reading the custom metrics API
from the server itself, as kube-controller-manager does), a node agent, the provider as its own
process (``sfc-k8s metrics-provider``, self-signed TLS), registered by an ``APIService`` whose
Service has hand-written Endpoints (a Service without selector: nothing runs pods here). A
Deployment ``fw`` (1 replica, bound to the agent's node) stands for the NF: its pod's name and
UID get a real network namespace and veth, joined to a client by a link the agent programs,
and the client sends a paced UDP stream of a known rate that the pod echoes. Covers:
- ``kubectl get --raw`` of ``custom.metrics.k8s.io`` through the aggregation layer: ``/apis``
  and the group list the group, each version lists the three pod metrics; ``packets_per_second``
  of ``pods/*`` (label selector) within 10 % of the sent rate, in ``v1beta2`` and ``v1beta1``
  shapes; ``bits_per_second`` and ``sessions`` of the pod by name; an unknown metric is a 404
  naming the known ones;
- the HPA reads it through the same path: a target of half the rate makes it add a replica
  (ScalingActive True, TARGETS showing the measured value), and the stream loses nothing.

The pods are marked Running and Ready through the API (``FakeKubelet``; no node runtime here).
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import yaml

from tests.fixtures.apiserver import LocalAPIServer
from tests.fixtures.hpa import deployment, pods_hpa
from tests.fixtures.topology import PYTHON, TRAFFIC
from tests.integration.apiserver.test_hpa import (
    FakeKubelet,
    _condition,
    _eventually,
    _hpa_status,
    _pods,
    _replicas,
)
from tests.integration.operator.test_agent_programming import (
    Api,
    Pod,
    plug,
    running_agent,
    wait_programmed,
)
from tests.integration.operator.test_agent_traffic import (
    CLIENT_IP,
    CLIENT_MAC,
    PORT,
    SERVER_IP,
    SERVER_MAC,
    Topology,
    _spawn,
    build,
)
from tests.nettools import Janitor, run, unique

RATE = 400.0  # datagrams/s
WINDOW = 3.0
RAW = "/apis/custom.metrics.k8s.io"

HPA = pods_hpa(max_replicas=3, target=f"{RATE / 2:g}", scale_up_period=1)


def registration(port: int) -> str:
    """Service + Endpoints (the provider on loopback) + one APIService per version."""
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "sfc-k8s-metrics", "namespace": "default"},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": "https"}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "sfc-k8s-metrics", "namespace": "default"},
            "subsets": [
                {"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": port}]}
            ],
        },
    ]
    for version, priority in (("v1beta2", 200), ("v1beta1", 100)):
        documents.append(
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": f"{version}.custom.metrics.k8s.io"},
                "spec": {
                    "group": "custom.metrics.k8s.io",
                    "version": version,
                    "service": {"namespace": "default", "name": "sfc-k8s-metrics", "port": 443},
                    "insecureSkipTLSVerify": True,
                    "groupPriorityMinimum": 100,
                    "versionPriority": priority,
                },
            }
        )
    return yaml.safe_dump_all(documents)


def raw(cluster: LocalAPIServer, path: str) -> Any:
    return json.loads(cluster.kubectl("get", "--raw", path, check=True).stdout)


def nf_pod(janitor: Janitor, topo: Topology, api_pod: dict[str, Any], tag: str = "fw") -> Pod:
    """A network namespace and veth for an API pod (its name and UID), echoing with ``tag``:
    what the CNI plugin and the container would make of it."""
    meta = api_pod["metadata"]
    pod = Pod(meta["name"], meta["uid"], janitor.netns("sfcta"))
    plug(janitor, pod, mac=SERVER_MAC, ip=f"{SERVER_IP}/24")
    run("ip", "neigh", "replace", CLIENT_IP, "lladdr", CLIENT_MAC, "dev", "eth1", netns=pod.netns)
    echo = ["ip", "netns", "exec", pod.netns, PYTHON, TRAFFIC, "udp-echo", str(PORT), "--tag", tag]
    server = _spawn(janitor, echo, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert server.stdout is not None
    assert "listening" in server.stdout.readline()
    topo.replicas[tag] = pod
    return pod


def register_node(cluster: LocalAPIServer, node: str, agent_port: int) -> None:
    """The agent's Node, saying where the agent answers (here: loopback, a test port)."""
    body = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node,
            "annotations": {"sfc-k8s.io/agent-address": f"127.0.0.1:{agent_port}"},
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(body), check=True)


def start_stream(janitor: Janitor, topo: Topology, tag: str = "fw") -> subprocess.Popen[str]:
    """The paced stream, every echo expected from the replica tagged ``tag``."""
    argv = [
        "ip", "netns", "exec", topo.client.netns, PYTHON, TRAFFIC, "udp-stream",
        "--server", SERVER_IP, "--port", str(PORT), "--flows", "4",
        "--rate", f"{RATE:g}", "--tag", tag, "--duration", "60",
    ]  # fmt: skip
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    stream = _spawn(janitor, argv, **pipes)
    assert stream.stdout is not None
    assert stream.stdout.readline().strip() == "READY"
    return stream


def check_discovery(cluster: LocalAPIServer) -> None:
    groups = {g["name"] for g in raw(cluster, "/apis")["groups"]}
    assert "custom.metrics.k8s.io" in groups
    assert raw(cluster, RAW)["preferredVersion"]["version"] == "v1beta2"
    for version in ("v1beta2", "v1beta1"):
        names = {r["name"] for r in raw(cluster, f"{RAW}/{version}")["resources"]}
        assert names == {"pods/packets_per_second", "pods/bits_per_second", "pods/sessions"}


def check_metrics(cluster: LocalAPIServer, fw: Pod) -> None:
    path = "namespaces/default/pods/*/packets_per_second?labelSelector=app%3Dfw"
    (item,) = raw(cluster, f"{RAW}/v1beta2/{path}")["items"]
    assert item["describedObject"]["name"] == fw.name
    assert item["metric"] == {"name": "packets_per_second"}
    assert abs(_quantity(item["value"]) - RATE) <= 0.1 * RATE, item
    (old,) = raw(cluster, f"{RAW}/v1beta1/{path}")["items"]
    assert old["metricName"] == "packets_per_second"
    assert abs(_quantity(old["value"]) - RATE) <= 0.1 * RATE, old
    one = f"{RAW}/v1beta2/namespaces/default/pods/{fw.name}"
    (bits,) = raw(cluster, f"{one}/bits_per_second")["items"]
    assert abs(_quantity(bits["value"]) - RATE * 54 * 8) <= 0.1 * RATE * 54 * 8, bits
    (sessions,) = raw(cluster, f"{one}/sessions")["items"]
    assert _quantity(sessions["value"]) >= 4
    missing = cluster.kubectl("get", "--raw", f"{one}/jitter")
    assert missing.returncode != 0
    assert "could not find the metric jitter for pods (known: packets_per_second" in (
        missing.stderr
    )


def check_hpa_scales_up(cluster: LocalAPIServer) -> None:
    """Half the rate per pod as the target: the HPA adds a replica, reading the same path."""
    cluster.kubectl("apply", "-f", "-", input=HPA, check=True)
    _eventually(lambda: _replicas(cluster) >= 2, timeout=30)
    status = _hpa_status(cluster)
    active = _condition(status, "ScalingActive")
    assert (active.get("status"), active.get("reason")) == ("True", "ValidMetricFound")
    current = status["currentMetrics"][0]["pods"]["current"]["averageValue"]
    assert abs(_quantity(current) - RATE) <= 0.1 * RATE, status
    row = cluster.kubectl("get", "hpa", "fw", "--no-headers", check=True).stdout.split()
    assert row[2].endswith(f"/{RATE / 2:g}"), row


def test_custom_metrics_through_the_aggregation_layer_drive_the_hpa(
    metrics_cluster: LocalAPIServer, metrics_provider: int, janitor: Janitor, bpffs_root: str
) -> None:
    cluster, provider = metrics_cluster, metrics_provider
    cluster.apply_crds()
    api = Api(cluster.url)
    node = unique("node")
    with (
        running_agent(cluster, bpffs_root, node, traffic_window=WINDOW) as agent,
        FakeKubelet(cluster.url),
    ):
        assert agent.metrics.port is not None
        register_node(cluster, node, agent.metrics.port)
        cluster.kubectl("apply", "-f", "-", input=registration(provider), check=True)
        cluster.kubectl("apply", "-f", "-", input=deployment(node=node), check=True)
        _eventually(lambda: len(_pods(cluster.url)) == 1)
        (api_pod,) = _pods(cluster.url)
        topo = build(janitor, replicas=0)
        fw = nf_pod(janitor, topo, api_pod)
        name = unique("xc-hpa", 30)
        janitor.add(lambda: api.force_delete_xc(name))
        api.create_xc(name, [topo.client.endpoint(node)], [fw.endpoint(node)])
        wait_programmed(api, name, node)
        stream = start_stream(janitor, topo)
        time.sleep(WINDOW + 1.5)  # a whole window of steady traffic
        check_discovery(cluster)
        check_metrics(cluster, fw)
        check_hpa_scales_up(cluster)
        out, _ = stream.communicate("stop\n", timeout=20)

    result = json.loads(out.splitlines()[-1])
    assert all(flow["missing"] == [] for flow in result["flows"]), result


def _quantity(text: str) -> float:
    """A quantity as the provider and the HPA write them (plain, ``m``, ``k``)."""
    scale = {"m": 1e-3, "k": 1e3, "M": 1e6}
    return float(text[:-1]) * scale[text[-1]] if text[-1] in scale else float(text)
