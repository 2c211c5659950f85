"""The agent's multi-node decisions (``agent_reconcile.desired_endpoints`` and ``plan``).

Covers: a node programs nothing of a link without a local endpoint; with one, it programs the
other nodes' endpoints by address and id, and leaves out those of nodes that are not Ready, being
deleted, unknown, without an address, or without an id (and all of them when the agent runs no
tunnel or the link has no cluster id); a node's loss removes its endpoints (flows re-pick), its
return adds them back; a remote endpoint changing address or id is removed and added; a local
endpoint programmed with another id is re-added; a link with only remote endpoints left is
deleted; a link programmed under another cluster id is rebuilt; the change-detection projection
follows the other nodes' endpoints of carried links only.
"""

from __future__ import annotations

from typing import Any

from sfc_k8s.api import CrossConnectionSpec, EndpointState, Side, parse_cross_connection
from sfc_k8s.api.nodes import NodeView
from sfc_k8s.operator.agent_reconcile import (
    AddEndpoint,
    CreateLink,
    DeleteLink,
    LinkEndpoint,
    RemoveEndpoint,
    after_operation,
    desired_endpoints,
    desired_projection,
    plan,
)

L = "default_web-a-b"
A, B = Side.A, Side.B
ACTIVE, DRAINING = EndpointState.ACTIVE, EndpointState.DRAINING


def raw_endpoint(pod: str, node: str, ident: int, state: str = "active") -> dict[str, Any]:
    return {
        "pod": pod,
        "podUID": f"uid-{pod}",
        "node": node,
        "interface": "eth1",
        "hostInterface": f"sfc{pod}",
        "state": state,
        "id": ident,
    }


def raw_spec(
    a: list[dict[str, Any]], b: list[dict[str, Any]], cluster_id: int = 9
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "chain": "web",
        "link": "a-b",
        "a": {"function": "client", "interface": "eth1", "endpoints": a},
        "b": {"function": "fw", "interface": "eth1", "endpoints": b},
    }
    if cluster_id:
        spec["clusterId"] = cluster_id
    return spec


def parsed(spec: dict[str, Any]) -> CrossConnectionSpec:
    return parse_cross_connection({"metadata": {"name": "web-a-b"}, "spec": spec})


# client c1 on n1; firewall replicas f1 on n1, f2 on n2, f3 on n3
SPEC = raw_spec(
    [raw_endpoint("c1", "n1", 1)],
    [raw_endpoint("f1", "n1", 2), raw_endpoint("f2", "n2", 3), raw_endpoint("f3", "n3", 4)],
)
NODES = {
    "n1": NodeView("n1", "172.18.0.2", True),
    "n2": NodeView("n2", "172.18.0.3", True),
    "n3": NodeView("n3", "172.18.0.4", True),
}


def local(side: Side, ifname: str, ident: int, mode: EndpointState = ACTIVE) -> LinkEndpoint:
    return LinkEndpoint(side, ifname, mode, ident)


def remote(side: Side, ident: int, address: str, mode: EndpointState = ACTIVE) -> LinkEndpoint:
    return LinkEndpoint(side, "", mode, ident, address)


def keyed(*eps: LinkEndpoint) -> dict[str, LinkEndpoint]:
    return {ep.key: ep for ep in eps}


def test_every_endpoint_of_a_carried_link_local_by_interface_remote_by_address() -> None:
    assert desired_endpoints(parsed(SPEC), "n1", NODES) == keyed(
        local(A, "sfcc1", 1),
        local(B, "sfcf1", 2),
        remote(B, 3, "172.18.0.3"),
        remote(B, 4, "172.18.0.4"),
    )
    assert desired_endpoints(parsed(SPEC), "n2", NODES) == keyed(
        remote(A, 1, "172.18.0.2"),
        remote(B, 2, "172.18.0.2"),
        local(B, "sfcf2", 3),
        remote(B, 4, "172.18.0.4"),
    )
    assert desired_endpoints(parsed(SPEC), "n4", NODES) == {}


def test_endpoints_of_lost_unknown_or_addressless_nodes_are_left_out() -> None:
    expected = keyed(local(A, "sfcc1", 1), local(B, "sfcf1", 2), remote(B, 4, "172.18.0.4"))
    for lost in (
        NodeView("n2", "172.18.0.3", False),  # NotReady / Unknown / being deleted
        NodeView("n2", "", True, "no IPv4 InternalIP in status.addresses"),
    ):
        assert desired_endpoints(parsed(SPEC), "n1", {**NODES, "n2": lost}) == expected
    deleted = {k: v for k, v in NODES.items() if k != "n2"}
    assert desired_endpoints(parsed(SPEC), "n1", deleted) == expected


def test_without_tunnel_ids_or_cluster_id_only_local_endpoints() -> None:
    only_local = keyed(local(A, "sfcc1", 1), local(B, "sfcf1", 2))
    assert desired_endpoints(parsed(SPEC), "n1", None) == only_local
    no_cluster_id = raw_spec(SPEC["a"]["endpoints"], SPEC["b"]["endpoints"], cluster_id=0)
    assert desired_endpoints(parsed(no_cluster_id), "n1", NODES) == only_local
    no_ids = raw_spec([raw_endpoint("c1", "n1", 1)], [{**raw_endpoint("f2", "n2", 3), "id": None}])
    assert desired_endpoints(parsed(no_ids), "n1", NODES) == keyed(local(A, "sfcc1", 1))


def test_node_loss_removes_its_endpoints_and_its_return_adds_them() -> None:
    programmed = list(desired_endpoints(parsed(SPEC), "n1", NODES).values())
    lost = {**NODES, "n3": NodeView("n3", "172.18.0.4", False)}
    ops = plan(L, desired_endpoints(parsed(SPEC), "n1", lost), programmed, cluster_id=9)
    assert ops == [RemoveEndpoint(L, B, "", 4, "172.18.0.4")]
    after = after_operation(keyed(*programmed), ops[0])
    assert after is not None
    ops = plan(L, desired_endpoints(parsed(SPEC), "n1", NODES), after.values(), cluster_id=9)
    assert ops == [AddEndpoint(L, B, "", 4, "172.18.0.4")]


def test_moved_address_or_changed_id_is_removed_then_added() -> None:
    programmed = [local(A, "sfcc1", 1), remote(B, 3, "172.18.0.3")]
    want = keyed(local(A, "sfcc1", 1), remote(B, 3, "10.0.0.3"))
    assert plan(L, want, programmed) == [
        AddEndpoint(L, B, "", 3, "10.0.0.3"),
        RemoveEndpoint(L, B, "", 3, "172.18.0.3"),
    ]
    # a local endpoint the data plane numbered itself (before the controller assigned ids)
    programmed = [local(A, "sfcc1", 5), remote(B, 3, "172.18.0.3")]
    want = keyed(local(A, "sfcc1", 1), remote(B, 3, "172.18.0.3"))
    assert plan(L, want, programmed) == [
        RemoveEndpoint(L, A, "sfcc1", 5),
        AddEndpoint(L, A, "sfcc1", 1),
    ]


def test_only_remote_endpoints_left_deletes_the_link_and_none_creates_it() -> None:
    programmed = [local(A, "sfcc1", 1), remote(B, 3, "172.18.0.3")]
    assert plan(L, keyed(remote(B, 3, "172.18.0.3")), programmed) == [DeleteLink(L)]
    assert plan(L, keyed(remote(B, 3, "172.18.0.3")), None) == []
    draining_local = keyed(local(A, "sfcc1", 1, DRAINING), remote(B, 3, "172.18.0.3"))
    assert plan(L, draining_local, None) == []


def test_link_under_another_cluster_id_is_rebuilt() -> None:
    want = keyed(local(A, "sfcc1", 1), remote(B, 3, "172.18.0.3"))
    programmed = list(want.values())
    assert plan(L, want, programmed, cluster_id=9, programmed_cluster_id=9) == []
    assert plan(L, want, programmed, cluster_id=9, programmed_cluster_id=1) == [
        DeleteLink(L),
        CreateLink(L, (local(A, "sfcc1", 1),), (remote(B, 3, "172.18.0.3"),), 9),
    ]


def test_projection_follows_other_nodes_endpoints_of_carried_links_only() -> None:
    f3_gone = raw_spec(SPEC["a"]["endpoints"], SPEC["b"]["endpoints"][:2])
    assert desired_projection(SPEC, "n1") != desired_projection(f3_gone, "n1")
    renumbered = raw_spec(SPEC["a"]["endpoints"], SPEC["b"]["endpoints"], cluster_id=10)
    assert desired_projection(SPEC, "n1") != desired_projection(renumbered, "n1")
    assert desired_projection(SPEC, "n4") == desired_projection(f3_gone, "n4")
