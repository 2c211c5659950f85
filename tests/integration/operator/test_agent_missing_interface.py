"""A node agent told to program an interface a pod does not have, or does not have yet.

The agent runs for real (Kopf via KopfRunner) against the local API server; pods are Pod objects
carrying the ``k8s.v1.cni.cncf.io/network-status`` annotation exactly as the local node runtime
writes it after CNI ADD (built with the runtime's own ``network_status``), and real veths where
the pod has its interface. Covers:
- a chain naming ``eth3`` on a Running, Ready pod attached on eth1 and eth2 only: the node
  reports a failure naming ``namespace/pod`` and the interface with the ones the pod has (not the
  hashed host interface), programs everything else of the link, and re-checks rarely
  (``max_retry_delay``), not once per ``retry_delay``;
- an interface not created yet (no pod object to say otherwise): reported as awaited, with the
  pod and its interface named, retried with a back-off that doubles up to ``max_retry_delay``
  (a bounded number of retries in a window where the old fixed delay made dozens), and
  programmed once its veth appears.
Both cases run under one agent, their retries counted over the same window (a reason each).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from sfc_k8s.api import NETWORK_STATUS_ANNOTATION
from sfc_k8s.api.naming import host_ifname
from sfc_k8s.dataplane import Dataplane
from sfc_k8s.local.node.cni import Attachment, network_status
from sfc_k8s.operator.agent import NodeAgent
from sfc_k8s.operator.agent_reconcile import link_name
from tests.integration.operator.test_agent_programming import (
    NAMESPACE,
    Api,
    link_state,
    make_pod,
    node_report,
    plug,
    running_agent,
    scrape,
    wait_for,
)
from tests.nettools import Janitor, unique

FIRST, CAP = 0.2, 2.0  # the agent's retry_delay and max_retry_delay in these tests
WINDOW = 8.0  # seconds over which retries are counted


def _runtime_network_status(*ifnames: str) -> str:
    """The annotation the local node runtime writes: the cluster network, then each NAD's."""
    attachments = [("eth0", True), *((ifname, False) for ifname in ifnames)]
    return json.dumps(
        [
            network_status(
                Attachment(
                    network="cluster" if default else f"{NAMESPACE}/{ifname}",
                    ifname=ifname,
                    config={},
                    result={"interfaces": [{"name": ifname, "sandbox": "/run/netns/x"}]},
                    default=default,
                )
            )
            for ifname, default in attachments
        ]
    )


def running_pod(api: Api, janitor: Janitor, name: str, node: str, *ifnames: str) -> str:
    """A Pod object that went through CNI ADD on ``ifnames`` and is Running and Ready; its UID."""
    path = f"/api/v1/namespaces/{NAMESPACE}/pods"
    body = {
        "metadata": {
            "name": name,
            "annotations": {NETWORK_STATUS_ANNOTATION: _runtime_network_status(*ifnames)},
        },
        "spec": {"nodeName": node, "containers": [{"name": "nf", "image": "nf"}]},
    }
    created = api.request("POST", path, body)
    janitor.add(lambda: api.request("DELETE", f"{path}/{name}", {"gracePeriodSeconds": 0}))
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ready = {"type": "Ready", "status": "True", "lastTransitionTime": stamp}
    api.request(
        "PATCH",
        f"{path}/{name}/status",
        {"status": {"phase": "Running", "conditions": [ready]}},
        content_type="application/merge-patch+json",
    )
    uid: str = created["metadata"]["uid"]
    return uid


def _errors(agent: NodeAgent, reason: str) -> float:
    pattern = re.compile(
        r'^sfc_k8s_agent_reconcile_errors_total\{reason="' + reason + r'"\} (\S+)$', re.M
    )
    found = pattern.search(scrape(agent))
    return float(found.group(1)) if found else 0.0


def test_missing_interfaces_are_named_and_retried_rarely_or_with_back_off(
    apiserver: Any, api: Api, janitor: Janitor, bpffs_root: str, dataplane: Dataplane
) -> None:
    """Both cases under one agent, their retries counted over one window (each reason has its
    own counter): an interface not created yet, then one the pod does not have."""
    node = unique("node")
    client, late = make_pod(janitor, "client"), make_pod(janitor, "late")
    plug(janitor, client)  # `late` has no veth yet, and no Pod object says what it will have
    awaited = unique("xc-late", 30)
    janitor.add(lambda: api.force_delete_xc(awaited))
    api.create_xc(awaited, [client.endpoint(node)], [late.endpoint(node)])

    with running_agent(apiserver, bpffs_root, node, max_retry_delay=CAP) as agent:
        # Not created yet: awaited, the pod and its interface named.
        expected = f"waiting for interface(s) eth1 of {NAMESPACE}/{late.name} ({late.host})"
        report = wait_for(
            "a report naming the awaited interface",
            lambda: (
                (r := node_report(api, awaited, node)) and expected in r.get("waiting", "") and r
            ),
        )
        # not yet: transient, so not a problem for a person (the chain is not made Degraded)
        assert report["ready"] is False and report["message"] == ""
        assert _errors(agent, "pod_lacks_interface") == 0

        # Never: a chain naming eth3 on a pod attached on eth1 and eth2 only (its own client:
        # an interface is an endpoint of one link).
        other = make_pod(janitor, "client")
        plug(janitor, other)
        fw = unique("fw", 20)
        uid = running_pod(api, janitor, fw, node, "eth1", "eth2")
        eth3 = {
            "pod": fw,
            "podUID": uid,
            "node": node,
            "interface": "eth3",
            "hostInterface": host_ifname(uid, "eth3"),
            "state": "active",
        }
        lacking = unique("xc-eth3", 30)
        janitor.add(lambda: api.force_delete_xc(lacking))
        api.create_xc(lacking, [other.endpoint(node)], [eth3])
        expected = f"{NAMESPACE}/{fw}: no interface eth3 (the pod has eth1, eth2)"
        report = wait_for(
            "a report naming the pod and its interface",
            lambda: (r := node_report(api, lacking, node)) and expected in r["message"] and r,
        )
        assert report["ready"] is False
        assert eth3["hostInterface"] not in report["message"]
        assert "waiting for" not in report["message"]  # "never", not "not yet"
        assert link_state(dataplane, link_name(NAMESPACE, lacking)) == {other.host: ("a", "active")}

        before = {r: _errors(agent, r) for r in ("pod_lacks_interface", "interface_missing")}
        time.sleep(WINDOW)
        lacks = _errors(agent, "pod_lacks_interface") - before["pod_lacks_interface"]
        missing = _errors(agent, "interface_missing") - before["interface_missing"]
        # Never: one check per CAP seconds (the old agent retried every FIRST: about 40 here).
        assert 1 <= lacks <= WINDOW / CAP + 2, lacks
        # Not yet: doubling from FIRST to CAP, at most about log2(CAP / FIRST) + WINDOW / CAP
        # retries (a fixed FIRST made about 40).
        assert 1 <= missing <= 10, missing

        plug(janitor, late)
        link = link_name(NAMESPACE, awaited)
        wait_for(
            "the late interface programmed once it exists",
            lambda: (link_state(dataplane, link) or {}).get(late.host) == ("b", "active"),
        )
        wait_for("a ready report", lambda: (r := node_report(api, awaited, node)) and r["ready"])
