"""The node agent running for real (Kopf via KopfRunner) against the local API server.

CrossConnections are created directly (no controller); pods are real network namespaces whose
data-plane veth's host end is named ``host_ifname(pod UID, "eth1")`` as the CNI plugin names it;
the data plane is pinned under a private bpffs root. Covers:
- an xc with endpoints on this node -> a link with exactly this node's endpoints, status
  ``nodes.<node>`` ready with observedGeneration, the per-node finalizer on the object;
- an endpoint whose interface does not exist yet -> the others are programmed, the status says
  which interface is awaited, and it is programmed once its veth appears;
- draining and removal of an endpoint follow the spec;
- an xc with endpoints on other nodes only -> untouched (no finalizer, state or status); an xc
  whose endpoints all leave this node -> link deleted, report and finalizer removed;
- an invalid spec -> ready false with the offending field, nothing programmed;
- ``dataplane.drainTimeoutSeconds``: a draining endpoint is removed once its time is up, while
  the spec still lists it (the pod still terminating), and the node stays reported ready;
- metrics: per-endpoint counters read from the data plane, reconcile latency histogram; 37
  frames of 100 bytes sent from a pod give exactly 37 packets and 3,700 bytes received from
  it and sent to the other side's pod, and one session, in the ``/metrics`` text;
- deleting the xc -> link and its pins gone before the object disappears;
- two agents (two nodes, two bpffs roots) on one xc: each programs only its endpoints, each adds
  its own finalizer, they settle (no write ping-pong), and one node leaving does not disturb the
  other.

The helpers here (API client, fake pods, running agent) are shared with test_agent_traffic.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kopf.testing import KopfRunner
from prometheus_client.parser import text_string_to_metric_families

from sfc_k8s.api.naming import host_ifname
from sfc_k8s.dataplane import Dataplane, LinkNotFound
from sfc_k8s.local.netns import run_in_netns
from sfc_k8s.operator.agent import AgentConfig, NodeAgent, agent_finalizer, annotation_prefix
from sfc_k8s.operator.agent_reconcile import link_name
from tests.fixtures import frames as f
from tests.nettools import Janitor, private_bpffs_root, run, unique

T = TypeVar("T")
XC_PATH = "/apis/sfc-k8s.io/v1alpha1/namespaces/{ns}/crossconnections"
NAMESPACE = "default"


# -- helpers -----------------------------------------------------------------------------------
def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 15.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail saying ``what`` never happened."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Api:
    """The few calls the tests need, straight over HTTP (kubectl costs a process per call)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def request(
        self, method: str, path: str, body: Any = None, *, content_type: str = "application/json"
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", content_type)
        req.add_header("Accept", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def xc_path(self, name: str = "", namespace: str = NAMESPACE) -> str:
        return XC_PATH.format(ns=namespace) + (f"/{name}" if name else "")

    def create_xc(
        self,
        name: str,
        a: list[dict[str, Any]],
        b: list[dict[str, Any]],
        *,
        dataplane: dict[str, Any] | None = None,
    ) -> Any:
        body: dict[str, Any] = {
            "apiVersion": "sfc-k8s.io/v1alpha1",
            "kind": "CrossConnection",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "chain": "test",
                "link": name,
                "a": {"function": "left", "interface": "eth1", "endpoints": a},
                "b": {"function": "right", "interface": "eth1", "endpoints": b},
            },
        }
        if dataplane:
            body["spec"]["dataplane"] = dataplane
        return self.request("POST", self.xc_path(), body)

    def set_endpoints(self, name: str, a: list[dict[str, Any]], b: list[dict[str, Any]]) -> Any:
        patch = {"spec": {"a": {"endpoints": a}, "b": {"endpoints": b}}}
        return self.request(
            "PATCH", self.xc_path(name), patch, content_type="application/merge-patch+json"
        )

    def get_xc(self, name: str) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = self.request("GET", self.xc_path(name))
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise
        return body

    def delete_xc(self, name: str) -> None:
        with suppress(urllib.error.HTTPError):
            self.request("DELETE", self.xc_path(name))

    def force_delete_xc(self, name: str) -> None:
        """Delete without waiting for finalizers (as an admin stripping them would)."""
        try:
            self.request(
                "PATCH",
                self.xc_path(name),
                {"metadata": {"finalizers": None}},
                content_type="application/merge-patch+json",
            )
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return
            raise
        self.delete_xc(name)


@dataclass(frozen=True)
class Pod:
    """A pod as the agent sees it: a UID, a namespace, and eth1's host end in the root ns."""

    name: str
    uid: str
    netns: str

    @property
    def host(self) -> str:
        return host_ifname(self.uid, "eth1")

    def endpoint(self, node: str, state: str = "active") -> dict[str, Any]:
        return {
            "pod": self.name,
            "podUID": self.uid,
            "node": node,
            "interface": "eth1",
            "hostInterface": self.host,
            "state": state,
        }


def make_pod(janitor: Janitor, prefix: str) -> Pod:
    """A pod's namespace, without its data-plane interface yet (``plug`` adds it)."""
    return Pod(unique(prefix, 20), str(uuid.uuid4()), janitor.netns("sfcta"))


def plug(janitor: Janitor, pod: Pod, *, mac: str | None = None, ip: str | None = None) -> None:
    """Create the pod's veth as the CNI plugin does: host end ``pod.host``, pod end ``eth1``."""
    peer = ["peer", "name", "eth1", *(["address", mac] if mac else []), "netns", pod.netns]
    run("ip", "link", "add", pod.host, "type", "veth", *peer)
    janitor.add(lambda: run("ip", "link", "del", pod.host, check=False))
    run(
        "sysctl", "-q", "-w", f"net.ipv6.conf.{pod.host}.disable_ipv6=1",
        f"net.ipv4.conf.{pod.host}.forwarding=0",
    )  # fmt: skip
    run("ip", "link", "set", pod.host, "up")
    if ip:
        run("ip", "addr", "add", ip, "dev", "eth1", netns=pod.netns)
    run("ip", "link", "set", "eth1", "up", netns=pod.netns)


def link_state(dp: Dataplane, link: str) -> dict[str, tuple[str, str]] | None:
    """{host interface: (side, state)} of a programmed link, None if it does not exist."""
    try:
        status = dp.status(link)
    except LinkNotFound:
        return None
    return {ep.ifname: (ep.side.value, ep.state.value) for ep in status.endpoints}


def new_bpffs_root(janitor: Janitor) -> str:
    """A bpffs root for one test; whatever the agent left there is destroyed by the janitor."""
    root = private_bpffs_root()

    def destroy() -> None:
        if Path(root).exists():
            with Dataplane(root, session_table_size=65536) as dp:
                dp.destroy()

    janitor.add(lambda: subprocess.run(["rm", "-rf", root], check=False))
    janitor.add(destroy)
    return root


def open_dataplane(root: str) -> Iterator[Dataplane]:
    """The test's own view of the agent's data plane (as another process would open it)."""
    dp = Dataplane(root, session_table_size=65536)
    try:
        yield dp
    finally:
        dp.close()


@contextmanager
def running_agent(apiserver: Any, root: str, node: str, **overrides: Any) -> Iterator[NodeAgent]:
    """A NodeAgent run by Kopf in a thread until the block ends (errors re-raised at exit)."""
    settings: dict[str, Any] = {
        "metrics_host": "127.0.0.1",
        "metrics_port": 0,
        "retry_delay": 0.2,
        "session_table_size": 65536,
        **overrides,
    }
    config = AgentConfig(
        node=node, kubeconfig=str(apiserver.kubeconfig), bpffs_root=root, **settings
    )
    agent = NodeAgent(config)
    args = ["run", "--standalone", "--all-namespaces"]
    with KopfRunner(args, registry=agent.registry, settings=agent.settings, timeout=30):
        wait_for("the agent to start", lambda: agent.metrics.port)
        yield agent


def node_report(api: Api, name: str, node: str) -> dict[str, Any] | None:
    body = api.get_xc(name) or {}
    report: dict[str, Any] | None = ((body.get("status") or {}).get("nodes") or {}).get(node)
    return report


def wait_programmed(api: Api, name: str, node: str) -> dict[str, Any]:
    """Wait until the agent reports the xc's current generation programmed (a complete apply)."""

    def probe() -> dict[str, Any] | None:
        body = api.get_xc(name) or {}
        report = ((body.get("status") or {}).get("nodes") or {}).get(node) or {}
        current = report.get("observedGeneration") == body["metadata"]["generation"]
        return report if current and report.get("ready") else None

    return wait_for(f"{name} programmed on {node}", probe)


def scrape(agent: NodeAgent) -> str:
    url = f"http://127.0.0.1:{agent.metrics.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text: str = resp.read().decode()
    return text


# -- tests -------------------------------------------------------------------------------------
def test_agent_programs_follows_and_releases_a_cross_connection(
    apiserver: Any, api: Api, janitor: Janitor, bpffs_root: str, dataplane: Dataplane
) -> None:
    node, other = unique("node"), unique("other")
    client, fw1, fw2 = (make_pod(janitor, p) for p in ("client", "fw1", "fw2"))
    for pod in (client, fw1):
        plug(janitor, pod)
    remote = make_pod(janitor, "remote")  # lives on another node: never programmed here
    name = unique("xc-prog", 30)
    link = link_name(NAMESPACE, name)
    janitor.add(lambda: api.force_delete_xc(name))
    a = [client.endpoint(node)]
    b = [fw1.endpoint(node), remote.endpoint(other)]
    api.create_xc(name, a, b)

    with running_agent(apiserver, bpffs_root, node) as agent:
        wait_for(
            "client and fw1 programmed",
            lambda: (
                link_state(dataplane, link)
                == {client.host: ("a", "active"), fw1.host: ("b", "active")}
            ),
        )
        report = wait_for("a ready report", lambda: node_report(api, name, node))
        body = api.get_xc(name)
        assert body is not None
        assert report["ready"] is True and report["programmedEndpoints"] == 2
        assert report["observedGeneration"] == body["metadata"]["generation"]
        assert report["message"] == "" and report["lastUpdate"].endswith("Z")
        assert agent_finalizer(node) in body["metadata"]["finalizers"]
        assert other not in body["status"]["nodes"]

        # A new replica whose veth is not there yet: everything else stays programmed.
        api.set_endpoints(name, a, [*b, fw2.endpoint(node)])
        waiting = wait_for(
            "a report naming the missing interface",
            lambda: (r := node_report(api, name, node)) and fw2.host in r.get("waiting", "") and r,
        )
        assert waiting["ready"] is False and waiting["message"] == ""
        assert set(link_state(dataplane, link) or {}) == {client.host, fw1.host}
        plug(janitor, fw2)
        wait_for(
            "fw2 programmed once its veth exists",
            lambda: (link_state(dataplane, link) or {}).get(fw2.host) == ("b", "active"),
        )
        wait_for(
            "ready again with 3 endpoints",
            lambda: (
                (r := node_report(api, name, node)) and r["ready"] and r["programmedEndpoints"] == 3
            ),
        )

        # Scale-in: fw1 drains (keeps its sessions), then leaves.
        api.set_endpoints(name, a, [fw1.endpoint(node, "draining"), fw2.endpoint(node)])
        wait_for(
            "fw1 draining",
            lambda: (link_state(dataplane, link) or {}).get(fw1.host) == ("b", "draining"),
        )
        api.set_endpoints(name, a, [fw2.endpoint(node)])
        wait_for(
            "fw1 removed",
            lambda: (
                link_state(dataplane, link)
                == {client.host: ("a", "active"), fw2.host: ("b", "active")}
            ),
        )

        metrics = scrape(agent)
        assert f'link="{link}"' in metrics
        assert "sfc_k8s_endpoint_packets_total{" in metrics
        assert "sfc_k8s_link_sessions{" in metrics
        count = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("sfc_k8s_agent_reconcile_seconds_count")
        )
        assert count >= 4

        # Deletion: the data plane is cleaned before the finalizer lets the object go.
        api.delete_xc(name)
        wait_for("the xc to disappear", lambda: api.get_xc(name) is None)
        assert link not in dataplane.links()
        assert not (Path(bpffs_root) / "links" / link).exists()


def test_agent_leaves_foreign_objects_alone_and_reports_invalid_specs(
    apiserver: Any, api: Api, janitor: Janitor, bpffs_root: str, dataplane: Dataplane
) -> None:
    node, other = unique("node"), unique("other")
    left, right, extra = (make_pod(janitor, p) for p in ("left", "right", "extra"))
    for pod in (left, right, extra):
        plug(janitor, pod)
    foreign, broken, local = (unique(p, 30) for p in ("xc-foreign", "xc-broken", "xc-local"))
    for name in (foreign, broken, local):
        janitor.add(lambda name=name: api.force_delete_xc(name))
    api.create_xc(foreign, [left.endpoint(other)], [right.endpoint(other)])
    twice = {**right.endpoint(node), "hostInterface": left.host}  # left's interface, twice
    api.create_xc(broken, [left.endpoint(node)], [twice])

    with running_agent(apiserver, bpffs_root, node):
        report = wait_for("a report on the invalid xc", lambda: node_report(api, broken, node))
        assert report["ready"] is False
        assert "spec.b.endpoints[0]" in report["message"]
        assert link_name(NAMESPACE, broken) not in dataplane.links()

        # Once a later object is programmed, the earlier foreign one has surely been seen.
        api.create_xc(local, [right.endpoint(node)], [extra.endpoint(node)])
        wait_for("the local xc", lambda: link_state(dataplane, link_name(NAMESPACE, local)))
        body = api.get_xc(foreign)
        assert body is not None
        assert agent_finalizer(node) not in (body["metadata"].get("finalizers") or [])
        assert not any(
            key.startswith(annotation_prefix(node))
            for key in body["metadata"].get("annotations") or {}
        )
        assert node not in ((body.get("status") or {}).get("nodes") or {})
        assert link_name(NAMESPACE, foreign) not in dataplane.links()

        # Fixing the spec is picked up.
        api.set_endpoints(broken, [left.endpoint(node)], [])
        wait_for(
            "the fixed xc ready",
            lambda: (r := node_report(api, broken, node)) and r["ready"] and r,
        )
        assert link_name(NAMESPACE, broken) in dataplane.links()

        # Its endpoints move to another node: link, report and finalizer go.
        api.set_endpoints(broken, [left.endpoint(other)], [])

        def released() -> bool:
            body = api.get_xc(broken) or {}
            return (
                link_name(NAMESPACE, broken) not in dataplane.links()
                and node not in ((body.get("status") or {}).get("nodes") or {})
                and agent_finalizer(node) not in (body["metadata"].get("finalizers") or [])
            )

        wait_for("the xc released by this node", released)


def test_draining_endpoint_is_removed_when_its_drain_timeout_expires(
    apiserver: Any, api: Api, janitor: Janitor, bpffs_root: str, dataplane: Dataplane
) -> None:
    node = unique("node")
    client, fw1, fw2 = (make_pod(janitor, p) for p in ("client", "fw1", "fw2"))
    for pod in (client, fw1, fw2):
        plug(janitor, pod)
    name = unique("xc-drain", 30)
    link = link_name(NAMESPACE, name)
    janitor.add(lambda: api.force_delete_xc(name))
    a = [client.endpoint(node)]
    b = [fw1.endpoint(node), fw2.endpoint(node)]
    # Longer than the agent's 1 s drain check, so that a timeout cut short shows.
    api.create_xc(name, a, b, dataplane={"drainTimeoutSeconds": 3})

    with running_agent(apiserver, bpffs_root, node):
        wait_programmed(api, name, node)
        # Taken before the write: the agent cannot start fw1's 3 s drain earlier, so however
        # loaded the machine, fw1 cannot be gone sooner than 3 s after this.
        began = time.monotonic()
        api.set_endpoints(name, a, [fw1.endpoint(node, "draining"), fw2.endpoint(node)])
        wait_for(
            "fw1 draining",
            lambda: (link_state(dataplane, link) or {}).get(fw1.host) == ("b", "draining"),
        )
        wait_for(
            "fw1 removed after its timeout",
            lambda: (state := link_state(dataplane, link)) is not None and fw1.host not in state,
        )
        assert time.monotonic() - began >= 3.0, "fw1 left before its drain timeout"
        report = wait_for(
            "a report with 2 endpoints",
            lambda: (r := node_report(api, name, node)) and r["programmedEndpoints"] == 2 and r,
        )
        assert report["ready"] is True
        body = api.get_xc(name)
        assert body is not None
        assert [e["state"] for e in body["spec"]["b"]["endpoints"]] == ["draining", "active"]


def test_two_node_agents_share_one_cross_connection(
    apiserver: Any, api: Api, janitor: Janitor
) -> None:
    roots = [new_bpffs_root(janitor), new_bpffs_root(janitor)]
    views = [Dataplane(root, session_table_size=65536) for root in roots]
    for view in views:
        janitor.add(view.close)
    node_a, node_b = unique("node-a"), unique("node-b")
    client, fw1, fw2 = (make_pod(janitor, p) for p in ("c", "f1", "f2"))
    for pod in (client, fw1, fw2):
        plug(janitor, pod)
    name = unique("xc-shared", 30)
    link = link_name(NAMESPACE, name)
    janitor.add(lambda: api.force_delete_xc(name))
    # node-a holds the client and fw1, node-b holds fw2 (each agent sees only its own part).
    a = [client.endpoint(node_a)]
    api.create_xc(name, a, [fw1.endpoint(node_a), fw2.endpoint(node_b)])
    on_a = {client.host: ("a", "active"), fw1.host: ("b", "active")}

    with (
        running_agent(apiserver, roots[0], node_a),
        running_agent(apiserver, roots[1], node_b),
    ):
        wait_programmed(api, name, node_a)
        wait_programmed(api, name, node_b)
        assert link_state(views[0], link) == on_a
        assert link_state(views[1], link) == {fw2.host: ("b", "active")}
        body = api.get_xc(name)
        assert body is not None
        finalizers = set(body["metadata"]["finalizers"])
        assert {agent_finalizer(node_a), agent_finalizer(node_b)} <= finalizers
        # Settled: the two agents do not keep rewriting the object for each other.
        version = body["metadata"]["resourceVersion"]
        time.sleep(1.0)
        assert (api.get_xc(name) or {})["metadata"]["resourceVersion"] == version

        # fw2 leaves: node-b deletes its link and lets go; node-a reports the new generation.
        api.set_endpoints(name, a, [fw1.endpoint(node_a)])
        wait_programmed(api, name, node_a)
        wait_for("node-b's link gone", lambda: link not in views[1].links())
        wait_for(
            "node-b released the xc",
            lambda: (
                agent_finalizer(node_b)
                not in ((api.get_xc(name) or {})["metadata"].get("finalizers") or [])
            ),
        )
        assert link_state(views[0], link) == on_a

        api.delete_xc(name)
        wait_for("the xc gone", lambda: api.get_xc(name) is None)
        assert link not in views[0].links()


def send_frames(pod: Pod, frame: bytes, count: int) -> None:
    """Send ``frame`` ``count`` times out of the pod's eth1 (into the link, from its side)."""

    def opened() -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        sock.bind(("eth1", 0))
        return sock

    with run_in_netns(pod.netns, opened) as sock:
        for _ in range(count):
            sock.send(frame)


def _samples(text: str, name: str, link: str) -> dict[tuple[str, ...], float]:
    """The samples of metric ``name`` for ``link``: (interface, direction) or () -> value."""
    out: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("link") == link:
                key = tuple(
                    sample.labels[k] for k in ("interface", "direction") if k in sample.labels
                )
                out[key] = sample.value
    return out


def test_metrics_show_the_counts_of_a_known_number_of_packets(
    apiserver: Any, api: Api, janitor: Janitor, bpffs_root: str
) -> None:
    node = unique("node")
    client, fw = (make_pod(janitor, p) for p in ("mclient", "mfw"))
    for pod in (client, fw):
        # No IPv6 in the pods: no router solicitation or MLD report enters the link uninvited.
        run("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1", netns=pod.netns)
        run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", netns=pod.netns)
        plug(janitor, pod)
    name = unique("xc-metrics", 30)
    link = link_name(NAMESPACE, name)
    janitor.add(lambda: api.force_delete_xc(name))
    api.create_xc(name, [client.endpoint(node)], [fw.endpoint(node)])
    udp = f.l4(40000, 7000, b"m" * 46)
    frame = f.eth(f.ETH_IP, f.ipv4("10.77.0.1", "10.77.0.2", f.UDP, udp))
    assert len(frame) == 100

    with running_agent(apiserver, bpffs_root, node) as agent:
        wait_programmed(api, name, node)
        send_frames(client, frame, 37)
        # The frames are processed in softirq after send() returns: wait for the last one.

        def counted() -> str | None:
            text = scrape(agent)
            tx = _samples(text, "sfc_k8s_endpoint_packets_total", link).get((fw.host, "tx"))
            return text if tx == 37 else None

        text = wait_for("the 37 frames counted", counted)

    packets = _samples(text, "sfc_k8s_endpoint_packets_total", link)
    octets = _samples(text, "sfc_k8s_endpoint_bytes_total", link)
    sent, came = (client.host, "rx"), (fw.host, "tx")  # into the link; out into fw's pod
    idle = [(client.host, "tx"), (fw.host, "rx")]
    assert packets == {sent: 37, came: 37, **dict.fromkeys(idle, 0)}
    assert octets == {sent: 3700, came: 3700, **dict.fromkeys(idle, 0)}
    assert _samples(text, "sfc_k8s_link_sessions", link) == {(): 1}
