"""Chain + pods -> CrossConnections: which pods are endpoints, in which state, and in what order.

Covers: Ready pods are active, terminating pods draining (even if still Ready), unready and
unscheduled pods left out; pods of other namespaces and unmatched pods ignored; a pod selected by
two functions left out of every link; host interface names from naming.host_ifname; owner
reference, labels and names; sorted, deterministic output whatever the pod order; dataplane
settings copied; parse_cross_connection round trip and its errors; link_programming reading the
agents' reports against the object generation; a pod interface linked by two chains stays with
the older chain (name breaks ties), other interfaces of the same pods and other namespaces are
no conflict.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfc_k8s.api import (
    CHAIN_LABEL,
    LINK_LABEL,
    CrossConnectionInvalid,
    EndpointState,
    LinkProgramming,
    PodInfo,
    Side,
    compute_cross_connections,
    compute_links,
    interface_claims,
    interface_conflicts,
    link_programming,
    parse_chain,
    parse_cross_connection,
    pod_info,
    selector_overlaps,
)
from sfc_k8s.api.naming import host_ifname
from tests.fixtures.chains import pod, web_chain

CHAIN = parse_chain(web_chain())


def endpoints(xc: dict[str, Any], side: str) -> list[tuple[str, str]]:
    return [(e["pod"], e["state"]) for e in xc["spec"][side]["endpoints"]]


def test_one_crossconnection_per_link_with_labels_and_owner() -> None:
    xcs = compute_cross_connections(CHAIN, [])
    assert [x["metadata"]["name"] for x in xcs] == ["web-client-firewall", "web-firewall-server"]
    meta = xcs[0]["metadata"]
    assert meta["namespace"] == "default"
    assert meta["labels"] == {CHAIN_LABEL: "web", LINK_LABEL: "client-firewall"}
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "sfc-k8s.io/v1alpha1",
            "kind": "ServiceFunctionChain",
            "name": "web",
            "uid": "uid-web",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert xcs[0]["apiVersion"] == "sfc-k8s.io/v1alpha1"
    assert xcs[0]["kind"] == "CrossConnection"
    spec = xcs[0]["spec"]
    assert (spec["chain"], spec["link"]) == ("web", "client-firewall")
    assert spec["a"] == {
        "function": "client",
        "interface": "eth1",
        "activeEndpoints": 0,
        "drainingEndpoints": 0,
        "endpoints": [],
    }
    assert "dataplane" not in spec


def test_endpoint_states_follow_pod_lifecycle() -> None:
    pods = [
        pod("fw-ready", "firewall"),
        pod("fw-starting", "firewall", ready=False),
        pod("fw-leaving", "firewall", terminating=True),  # still Ready but terminating
        pod("fw-gone-unready", "firewall", ready=False, terminating=True),
        pod("fw-unscheduled", "firewall", node=None, ready=False),
    ]
    xc = compute_cross_connections(CHAIN, pods)[0]
    assert endpoints(xc, "b") == [
        ("fw-gone-unready", "draining"),
        ("fw-leaving", "draining"),
        ("fw-ready", "active"),
    ]
    assert xc["spec"]["b"]["activeEndpoints"] == 1
    assert xc["spec"]["b"]["drainingEndpoints"] == 2


def test_endpoint_fields_and_host_interface_per_side() -> None:
    fw = pod("fw-1", "firewall", node="node-7")
    xcs = compute_cross_connections(CHAIN, [fw])
    (b_side,) = xcs[0]["spec"]["b"]["endpoints"]
    (a_side,) = xcs[1]["spec"]["a"]["endpoints"]
    assert b_side == {
        "pod": "fw-1",
        "podUID": "uid-fw-1",
        "node": "node-7",
        "interface": "eth1",
        "hostInterface": host_ifname("uid-fw-1", "eth1"),
        "state": "active",
    }
    assert a_side["interface"] == "eth2"
    assert a_side["hostInterface"] == host_ifname("uid-fw-1", "eth2")


def test_other_namespaces_and_unmatched_pods_are_ignored() -> None:
    pods = [pod("fw-other-ns", "firewall", namespace="other"), pod("db", "database")]
    links = compute_links(CHAIN, pods)
    assert all(not s.endpoints for link in links for s in (link.a, link.b))


def test_pod_selected_by_two_functions_is_left_out() -> None:
    body = web_chain()
    body["spec"]["functions"][2]["selector"] = {
        "matchExpressions": [{"key": "app", "operator": "In", "values": ["server", "firewall"]}]
    }
    chain = parse_chain(body)
    pods = [pod("fw-1", "firewall"), pod("sv-1", "server")]
    assert selector_overlaps(chain, pods) == {"fw-1": ("firewall", "server")}
    links = compute_links(chain, pods)
    assert [e.pod for e in links[1].b.endpoints] == ["sv-1"]
    assert not links[0].b.endpoints
    assert not links[1].a.endpoints


@given(st.permutations(range(6)))
def test_output_is_sorted_and_independent_of_pod_order(order: list[int]) -> None:
    pods = [pod(f"fw-{i}", "firewall", ready=i % 3 != 0, terminating=i == 4) for i in range(6)]
    pods += [pod("cl-b", "client"), pod("cl-a", "client")]
    shuffled = [pods[i] for i in order] + pods[6:]
    expected = compute_cross_connections(CHAIN, pods)
    assert compute_cross_connections(CHAIN, shuffled) == expected
    names = [e[0] for e in endpoints(expected[0], "b")]
    assert names == sorted(names)
    assert [e[0] for e in endpoints(expected[0], "a")] == ["cl-a", "cl-b"]


def test_dataplane_settings_are_copied() -> None:
    chain = parse_chain(web_chain(dataplane={"drainTimeoutSeconds": 5}))
    xc = compute_cross_connections(chain, [])[0]
    assert xc["spec"]["dataplane"] == {"drainTimeoutSeconds": 5}


def test_pod_info_from_a_pod_body() -> None:
    body: dict[str, Any] = {
        "metadata": {"name": "fw-1", "namespace": "ns", "uid": "u1", "labels": {"app": "fw"}},
        "spec": {"nodeName": "node-1"},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    info = pod_info(body)
    assert info == PodInfo("ns", "fw-1", "u1", {"app": "fw"}, "node-1", True, False)
    body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert pod_info(body).terminating
    body["status"]["phase"] = "Failed"
    assert not pod_info(body).ready
    assert pod_info({"metadata": {"name": "p"}}) == PodInfo("", "p", "", {}, None, False, False)
    body["status"] = {"conditions": [{"type": "Ready", "status": "False"}]}
    assert not pod_info(body).ready


def test_parse_cross_connection_round_trip() -> None:
    pods = [pod("fw-1", "firewall"), pod("fw-2", "firewall", terminating=True, node="node-2")]
    chain = parse_chain(web_chain(dataplane={"drainTimeoutSeconds": 7}))
    body = compute_cross_connections(chain, pods)[0]
    spec = parse_cross_connection(body)
    assert spec == compute_links(chain, pods)[0]
    assert spec.side(Side.B).on_node("node-2")[0].state is EndpointState.DRAINING
    assert spec.nodes == frozenset({"node-1", "node-2"})
    assert spec.dataplane.drain_timeout_seconds == 7
    assert spec.to_body() == body["spec"]


def test_parse_cross_connection_reports_every_problem() -> None:
    body = compute_cross_connections(CHAIN, [pod("fw-1", "firewall")])[0]
    bad = copy.deepcopy(body)
    del bad["spec"]["chain"]
    bad["spec"]["b"]["endpoints"][0]["state"] = "gone"
    bad["spec"]["b"]["endpoints"].append({"pod": "x"})
    bad["spec"]["a"] = None
    with pytest.raises(CrossConnectionInvalid) as info:
        parse_cross_connection(bad)
    assert info.value.problems == (
        "spec.chain: must name the owning chain",
        "spec.a: must be an object with function, interface and endpoints",
        "spec.b.endpoints[0].state: 'gone' is neither active nor draining",
        "spec.b.endpoints[1]: missing podUID, node, interface, state",
    )
    with pytest.raises(CrossConnectionInvalid):
        parse_cross_connection({"metadata": {"name": "x"}})


def programmed_xc(reports: dict[str, Any], generation: int | None = 4) -> dict[str, Any]:
    pods = [pod("cl-1", "client", node="n1"), pod("fw-1", "firewall", node="n2")]
    body: dict[str, Any] = dict(compute_cross_connections(CHAIN, pods)[0])
    body["metadata"] = {**body["metadata"]}
    if generation is not None:
        body["metadata"]["generation"] = generation
    body["status"] = {"nodes": reports}
    return body


def test_link_programmed_when_every_node_reports_current_generation() -> None:
    ok = {"ready": True, "observedGeneration": 4}
    assert link_programming(programmed_xc({"n1": ok, "n2": ok})).programmed
    assert link_programming(programmed_xc({"n1": ok, "n2": ok, "n9": {"ready": False}})).programmed


def test_link_waits_for_missing_or_stale_reports() -> None:
    ok = {"ready": True, "observedGeneration": 4}
    stale = {"ready": True, "observedGeneration": 3}
    report = link_programming(programmed_xc({"n1": ok, "n2": stale}))
    assert report == LinkProgramming(waiting=("n2",))
    assert link_programming(programmed_xc({})).waiting == ("n1", "n2")
    assert link_programming(programmed_xc({"n1": {"ready": True}, "n2": ok})).waiting == ("n1",)
    # without metadata.generation any ready report counts
    assert link_programming(programmed_xc({"n1": {"ready": True}, "n2": ok}, None)).programmed


def test_link_reports_agent_failures() -> None:
    ok = {"ready": True, "observedGeneration": 4}
    bad = {"ready": False, "observedGeneration": 4, "message": "no device sfc123"}
    report = link_programming(programmed_xc({"n1": ok, "n2": bad}))
    assert report.failed == (("n2", "no device sfc123"),)
    assert not report.programmed


def test_an_agent_waiting_for_an_interface_is_not_a_failure() -> None:
    ok = {"ready": True, "observedGeneration": 4}
    waiting = {"ready": False, "observedGeneration": 4, "message": "", "waiting": "sfc9 not yet"}
    report = link_programming(programmed_xc({"n1": ok, "n2": waiting}))
    assert report.waiting == ("n2",) and report.failed == ()


def test_link_reports_interfaces_larger_than_the_tunnel() -> None:
    too_big = {"type": "InterfacesFitTunnel", "status": "False", "message": "sfc1 (1500) > 1450"}
    fits = {**too_big, "status": "True"}
    ok = {"ready": True, "observedGeneration": 4}
    report = link_programming(
        programmed_xc({"n1": {**ok, "conditions": [fits]}, "n2": {**ok, "conditions": [too_big]}})
    )
    assert report.oversized == (("n2", "sfc1 (1500) > 1450"),)
    assert report.programmed  # small frames flow: a problem for a person, not a wait


def dated(body: dict[str, Any], created: str) -> Any:
    body["metadata"]["creationTimestamp"] = created
    return parse_chain(body)


def test_older_chain_keeps_a_contested_interface() -> None:
    old = dated(web_chain("old"), "2026-01-01T00:00:00Z")
    new = dated(web_chain("new"), "2026-01-02T00:00:00Z")
    pods = [pod("cl-1", "client"), pod("fw-1", "firewall"), pod("sv-1", "server")]
    assert interface_claims(new, pods)[("fw-1", "eth2")] == "firewall-server"
    assert interface_conflicts(old, pods, [new]) == {}
    assert interface_conflicts(new, pods, [old, new]) == {
        "cl-1": ("old", "eth1"),
        "fw-1": ("old", "eth1"),
        "sv-1": ("old", "eth1"),
    }
    links = compute_links(new, pods, exclude=interface_conflicts(new, pods, [old]))
    assert all(not s.endpoints for link in links for s in (link.a, link.b))


def test_same_pods_on_other_interfaces_do_not_conflict() -> None:
    old = dated(web_chain("old"), "2026-01-01T00:00:00Z")
    body = web_chain("tap")
    body["spec"]["functions"][1]["interfaces"] = ["eth3", "eth4"]
    body["spec"]["links"][0]["b"]["interface"] = "eth3"
    body["spec"]["links"][1]["a"]["interface"] = "eth4"
    body["spec"]["functions"][0]["selector"] = {"matchLabels": {"app": "probe"}}
    body["spec"]["functions"][2]["selector"] = {"matchLabels": {"app": "sink"}}
    tap = dated(body, "2026-01-02T00:00:00Z")
    pods = [pod("fw-1", "firewall"), pod("cl-1", "client")]
    assert interface_conflicts(tap, pods, [old]) == {}


def test_seniority_ties_are_broken_by_name_and_namespaces_are_apart() -> None:
    a = dated(web_chain("a"), "2026-01-01T00:00:00Z")
    b = dated(web_chain("b"), "2026-01-01T00:00:00Z")
    elsewhere = dated(web_chain("c", namespace="other"), "2020-01-01T00:00:00Z")
    pods = [pod("fw-1", "firewall")]
    assert interface_conflicts(a, pods, [b, elsewhere]) == {}
    assert interface_conflicts(b, pods, [a, elsewhere]) == {"fw-1": ("a", "eth1")}
