"""The node agent's pure logic (sfc_k8s.operator.agent_reconcile).

Covers: link names (deterministic, bpffs-safe, injective, bounded, recognisable); local endpoint
extraction from the parsed spec (node filter, derived host interfaces; invalid specs refused by
the one parser, ``sfc_k8s.api.parse_cross_connection``, with the field at fault); the plan from
desired to programmed endpoints (create, add, drain, remove, delete, re-activation, side moves,
ordering, no-op when equal); stale-link detection for garbage collection; the per-node
projection used for change detection; drain timeouts (which draining endpoints expire, when the
next one does); a missing host interface told "never" (the pod's network-status lacks the
interface, or lists it with no host end here, or no annotation and Ready past the grace) from
"not yet" (pod gone, replaced, terminating, not Ready, or Ready only briefly), the message naming
the pod and interface; the retry back-off (doubling, capped).
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from sfc_k8s.api import (
    NETWORK_STATUS_ANNOTATION,
    CrossConnectionInvalid,
    CrossConnectionSpec,
    DataplaneSpec,
    EndpointSpec,
    EndpointState,
    Side,
    parse_cross_connection,
)
from sfc_k8s.api.naming import host_ifname
from sfc_k8s.operator.agent_reconcile import (
    LINK_NAME_MAX,
    ActivateEndpoint,
    AddEndpoint,
    CreateLink,
    DeleteLink,
    DrainEndpoint,
    LinkEndpoint,
    RemoveEndpoint,
    absent_interface,
    after_operation,
    desired_projection,
    expire_drains,
    is_agent_link,
    link_name,
    local_endpoints,
    plan,
    retry_delay,
    stale_links,
)

L = "default_web-a-b"
A, B = Side.A, Side.B


def ep(side: str, ifname: str, mode: str = "active") -> LinkEndpoint:
    return LinkEndpoint(Side(side), ifname, EndpointState(mode))


def desired(*eps: LinkEndpoint) -> dict[str, LinkEndpoint]:
    return {e.ifname: e for e in eps}


def spec_endpoint(pod: str, node: str, host: str | None, state: str = "active") -> dict[str, Any]:
    body: dict[str, Any] = {
        "pod": pod,
        "podUID": f"uid-{pod}",
        "node": node,
        "interface": "eth1",
        "state": state,
    }
    if host is not None:
        body["hostInterface"] = host
    return body


def parsed(spec: dict[str, Any]) -> CrossConnectionSpec:
    """A raw spec (sides a and b, maybe dataplane) through the one parser, as the agent does."""
    full = {
        "chain": "web",
        "link": "a-b",
        **{
            side: {"function": f"f{side}", "interface": "eth1", **spec.get(side, {})}
            for side in "ab"
        },
    }
    if "dataplane" in spec:
        full["dataplane"] = spec["dataplane"]
    return parse_cross_connection({"metadata": {"name": "web-a-b"}, "spec": full})


# -- link names ------------------------------------------------------------------------------


def test_link_name_is_deterministic_and_bpffs_safe() -> None:
    name = link_name("default", "web.v2-client-firewall")
    assert name == link_name("default", "web.v2-client-firewall")
    assert name == "default_web_v2-client-firewall"
    assert "." not in name and "/" not in name
    assert is_agent_link(name)
    assert is_agent_link(name, namespace="default")
    assert not is_agent_link(name, namespace="other")


def test_link_names_differ_across_namespaces_and_names() -> None:
    names = {
        link_name(ns, n)
        for ns in ("a", "a-b", "ab")
        for n in ("x", "b-x", "x.y", "x-y", "b_x".replace("_", "-"))
    }
    assert len(names) == 3 * 4  # "b-x" appears twice in the inputs on purpose


def test_long_link_names_are_bounded_and_still_distinct() -> None:
    ns = "n" * 63
    first = link_name(ns, "c" * 200 + "-one")
    second = link_name(ns, "c" * 200 + "-two")
    assert len(first) == len(second) == LINK_NAME_MAX
    assert first != second
    assert is_agent_link(first, namespace=ns)


def test_hand_made_links_are_not_agent_links() -> None:
    assert not is_agent_link("mylink")
    assert not is_agent_link("UPPER_case")
    assert not is_agent_link("_leading")


# -- local endpoints -------------------------------------------------------------------------


def test_local_endpoints_keeps_this_nodes_endpoints_only() -> None:
    spec = {
        "a": {"endpoints": [spec_endpoint("c1", "n1", "sfcaaa"), spec_endpoint("c2", "n2", "x")]},
        "b": {"endpoints": [spec_endpoint("f1", "n1", "sfcbbb", "draining")]},
    }
    assert local_endpoints(parsed(spec), "n1") == desired(
        ep("a", "sfcaaa"), ep("b", "sfcbbb", "draining")
    )
    assert local_endpoints(parsed(spec), "n3") == {}
    assert local_endpoints(parsed({}), "n1") == {}


def test_local_endpoints_derives_missing_host_interface_like_the_cni_plugin() -> None:
    spec = {"a": {"endpoints": [spec_endpoint("c1", "n1", None)]}}
    expected = host_ifname("uid-c1", "eth1")
    assert local_endpoints(parsed(spec), "n1") == desired(ep("a", expected))


@pytest.mark.parametrize(
    "spec",
    [
        {"a": {"endpoints": [spec_endpoint("c1", "n1", "sfcx", "gone")]}},
        {
            "a": {"endpoints": [spec_endpoint("c1", "n1", "sfcx")]},
            "b": {"endpoints": [spec_endpoint("f1", "n1", "sfcx")]},
        },
        {"a": {"endpoints": [{"pod": "c1", "node": "n1"}]}},
    ],
    ids=["unknown-state", "interface-twice", "no-interface"],
)
def test_invalid_specs_are_refused_with_the_offending_field(spec: dict[str, Any]) -> None:
    with pytest.raises(CrossConnectionInvalid, match=r"spec\.[ab]\.endpoints\[0\]"):
        parsed(spec)


# -- plan ------------------------------------------------------------------------------------


def test_nothing_desired_and_no_link_is_a_no_op() -> None:
    assert plan(L, {}, None) == []


def test_new_link_is_created_with_its_active_endpoints_in_order() -> None:
    want = desired(ep("b", "sfc2"), ep("a", "sfc9"), ep("a", "sfc1"), ep("b", "old", "draining"))
    assert plan(L, want, None, cluster_id=7) == [
        CreateLink(L, (ep("a", "sfc1"), ep("a", "sfc9")), (ep("b", "sfc2"),), 7)
    ]


def test_equal_state_gives_no_operation() -> None:
    state = [ep("a", "sfc1"), ep("b", "sfc2", "draining")]
    assert plan(L, desired(*state), state) == []


def test_scale_out_adds_only_the_new_endpoint() -> None:
    programmed = [ep("a", "sfc1"), ep("b", "sfc2")]
    ops = plan(L, desired(*programmed, ep("b", "sfc3")), programmed)
    assert ops == [AddEndpoint(L, B, "sfc3")]


def test_terminating_endpoint_is_drained_then_removed() -> None:
    programmed = [ep("a", "sfc1"), ep("b", "sfc2"), ep("b", "sfc3")]
    draining = desired(ep("a", "sfc1"), ep("b", "sfc2"), ep("b", "sfc3", "draining"))
    assert plan(L, draining, programmed) == [DrainEndpoint(L, B, "sfc3")]
    now = [ep("a", "sfc1"), ep("b", "sfc2"), ep("b", "sfc3", "draining")]
    assert plan(L, desired(ep("a", "sfc1"), ep("b", "sfc2")), now) == [RemoveEndpoint(L, B, "sfc3")]


def test_draining_endpoint_never_programmed_is_not_added() -> None:
    programmed = [ep("a", "sfc1")]
    assert plan(L, desired(ep("a", "sfc1"), ep("b", "sfc2", "draining")), programmed) == []
    assert plan(L, desired(ep("b", "sfc2", "draining")), None) == []


def test_replacement_adds_before_it_drains_and_removes() -> None:
    programmed = [ep("a", "sfc1"), ep("b", "old1"), ep("b", "old2")]
    want = desired(ep("a", "sfc1"), ep("b", "new"), ep("b", "old1", "draining"))
    assert plan(L, want, programmed) == [
        AddEndpoint(L, B, "new"),
        DrainEndpoint(L, B, "old1"),
        RemoveEndpoint(L, B, "old2"),
    ]


def test_reactivation_is_in_place_and_side_moves_remove_then_add() -> None:
    programmed = [ep("a", "sfc1", "draining"), ep("b", "sfc2"), ep("b", "sfc3", "draining")]
    want = desired(ep("a", "sfc1"), ep("a", "sfc2"), ep("a", "sfc3"))
    assert plan(L, want, programmed) == [
        RemoveEndpoint(L, B, "sfc2"),
        RemoveEndpoint(L, B, "sfc3"),
        AddEndpoint(L, A, "sfc2"),
        AddEndpoint(L, A, "sfc3"),
        ActivateEndpoint(L, A, "sfc1"),
    ]


def test_draining_endpoint_that_moves_side_is_removed_only() -> None:
    programmed = [ep("a", "sfc1"), ep("b", "sfc2")]
    want = desired(ep("a", "sfc1"), ep("a", "sfc2", "draining"))
    assert plan(L, want, programmed) == [RemoveEndpoint(L, B, "sfc2")]


def test_endpoints_on_a_defunct_interface_are_programmed_again_or_dropped() -> None:
    """The interface an endpoint was programmed on is gone or was made again (same name, new
    ifindex): an active one is removed and added again (on the new interface), a draining one
    only removed (its sessions led to the old interface), and a live one is left alone."""
    gone = [LinkEndpoint(Side.B, n, EndpointState(m), defunct=True) for n, m in (
        ("sfc2", "active"), ("sfc3", "draining"))]  # fmt: skip
    programmed = [ep("a", "sfc1"), *gone]
    want = desired(ep("a", "sfc1"), ep("b", "sfc2"), ep("b", "sfc3", "draining"))
    assert plan(L, want, programmed) == [
        RemoveEndpoint(L, B, "sfc2"),
        AddEndpoint(L, B, "sfc2"),
        RemoveEndpoint(L, B, "sfc3"),
    ]
    assert plan(L, want, [ep("a", "sfc1"), ep("b", "sfc2"), ep("b", "sfc3", "draining")]) == []


def test_link_is_deleted_when_nothing_is_left_to_keep() -> None:
    programmed = [ep("a", "sfc1"), ep("b", "sfc2", "draining")]
    assert plan(L, {}, programmed) == [DeleteLink(L)]
    assert plan(L, {}, []) == [DeleteLink(L)]
    # A draining endpoint still holds sessions: the link stays while it drains.
    assert plan(L, desired(ep("b", "sfc2", "draining")), programmed) == [
        RemoveEndpoint(L, A, "sfc1")
    ]


def test_existing_empty_link_is_filled_without_recreating_it() -> None:
    assert plan(L, desired(ep("a", "sfc1")), []) == [AddEndpoint(L, A, "sfc1")]


# -- garbage collection and change detection ---------------------------------------------------


def test_stale_links_are_agent_links_no_object_explains() -> None:
    pinned = ["default_web-a-b", "default_web-b-c", "handmade", "other_x"]
    assert stale_links(pinned, {"default_web-a-b"}) == ["default_web-b-c", "other_x"]
    assert stale_links(pinned, {"default_web-a-b"}, namespaces=["default"]) == ["default_web-b-c"]
    assert stale_links(pinned, set(), namespaces=["default", "other"]) == [
        "default_web-a-b",
        "default_web-b-c",
        "other_x",
    ]
    assert stale_links(pinned, set(pinned)) == []


def test_projection_ignores_changes_that_program_nothing_new_here() -> None:
    base = {
        "a": {"endpoints": [spec_endpoint("c1", "n1", "sfc1"), spec_endpoint("c2", "n2", "x")]},
        "b": {"endpoints": [spec_endpoint("f1", "n1", "sfc2")]},
    }
    other_node_changed = {
        "a": {"endpoints": [spec_endpoint("c1", "n1", "sfc1"), spec_endpoint("c3", "n2", "y")]},
        "b": base["b"],
    }
    local_drain = {
        "a": base["a"],
        "b": {"endpoints": [spec_endpoint("f1", "n1", "sfc2", "draining")]},
    }
    assert desired_projection(base, "n1") == desired_projection(other_node_changed, "n1")
    assert desired_projection(base, "n1") != desired_projection(local_drain, "n1")
    assert desired_projection(base, "n2") != desired_projection(other_node_changed, "n2")
    broken = {"a": {"endpoints": [spec_endpoint("c1", "n1", "sfc1", "bogus")]}}
    assert desired_projection(broken, "n1") != desired_projection(base, "n1")


# -- drain timeouts ----------------------------------------------------------------------------


def test_drain_timeout_comes_from_the_spec() -> None:
    assert parsed({}).dataplane == DataplaneSpec()
    assert parsed({"dataplane": {"drainTimeoutSeconds": 30}}).dataplane.drain_timeout_seconds == 30
    with pytest.raises(CrossConnectionInvalid, match=r"spec\.dataplane\.drainTimeoutSeconds"):
        parsed({"dataplane": {"drainTimeoutSeconds": -1}})


def test_drains_expire_after_the_timeout_only() -> None:
    want = desired(ep("a", "sfc1"), ep("b", "old", "draining"), ep("b", "new", "draining"))
    # "old" began draining at t=100, "new" is about to be drained (no mark yet).
    kept, wake = expire_drains(want, {"old": 100.0}, 105.0, 30.0)
    assert kept == want and wake == 25.0
    kept, wake = expire_drains(want, {"old": 100.0}, 130.0, 30.0)
    assert set(kept) == {"sfc1", "new"} and wake == 30.0
    assert plan(L, kept, [ep("a", "sfc1"), ep("b", "old", "draining"), ep("b", "new")]) == [
        DrainEndpoint(L, B, "new"),
        RemoveEndpoint(L, B, "old"),
    ]


def test_no_timeout_keeps_draining_and_zero_removes_at_once() -> None:
    want = desired(ep("a", "sfc1"), ep("b", "old", "draining"))
    assert expire_drains(want, {"old": 0.0}, 1e9, None) == (want, None)
    kept, wake = expire_drains(want, {}, 5.0, 0.0)
    assert set(kept) == {"sfc1"} and wake is None


def test_after_operation_tracks_the_result_without_reading_back() -> None:
    create = CreateLink(L, (ep("a", "sfc1"),), (ep("b", "sfc2"), ep("b", "gone")))
    state = after_operation(None, create, skipped=["gone"])
    assert state == desired(ep("a", "sfc1"), ep("b", "sfc2"))
    state = after_operation(state, AddEndpoint(L, B, "sfc3"))
    state = after_operation(state, DrainEndpoint(L, B, "sfc2"))
    assert state == desired(ep("a", "sfc1"), ep("b", "sfc2", "draining"), ep("b", "sfc3"))
    state = after_operation(state, ActivateEndpoint(L, B, "sfc2"))
    state = after_operation(state, RemoveEndpoint(L, B, "sfc3"))
    assert state == desired(ep("a", "sfc1"), ep("b", "sfc2"))
    assert after_operation(state, DeleteLink(L)) is None


# -- missing interfaces ----------------------------------------------------------------------

NOW = datetime.datetime(2026, 12, 3, 12, 0, tzinfo=datetime.UTC)
EP = EndpointSpec(
    "fw-abc", "uid-fw", "n1", "eth3", host_ifname("uid-fw", "eth3"), EndpointState.ACTIVE
)


def fw_pod(
    interfaces: list[str] | None, *, uid: str = "uid-fw", ready_at: str | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "fw-abc", "namespace": "sfc-demo", "uid": uid}
    if interfaces is not None:
        entries = [{"name": "cluster", "interface": "eth0", "default": True}]
        entries += [{"name": f"sfc-demo/{i}", "interface": i} for i in interfaces]
        meta["annotations"] = {NETWORK_STATUS_ANNOTATION: json.dumps(entries)}
    status: dict[str, Any] = {"phase": "Running"}
    if ready_at is not None:
        status["conditions"] = [{"type": "Ready", "status": "True", "lastTransitionTime": ready_at}]
    return {"metadata": meta, "spec": {"nodeName": "n1"}, "status": status}


def absent(pod: dict[str, Any] | None, grace: float = 30.0) -> str | None:
    return absent_interface(EP, "sfc-demo", pod, now=NOW, grace=grace)


def test_an_interface_the_pod_was_not_given_is_never_coming() -> None:
    assert (
        absent(fw_pod(["eth1", "eth2"]))
        == "sfc-demo/fw-abc: no interface eth3 (the pod has eth1, eth2)"
    )
    assert absent(fw_pod([])) == (
        "sfc-demo/fw-abc: no interface eth3 (the pod has no interface but the cluster network's)"
    )
    listed = absent(fw_pod(["eth1", "eth3"]))
    assert listed is not None and listed.startswith("sfc-demo/fw-abc: interface eth3 was attached")
    assert EP.host_interface in listed  # here the host end is the news: name it


def test_without_network_status_a_pod_ready_past_the_grace_lacks_it() -> None:
    assert absent(fw_pod(None, ready_at="2026-12-03T11:58:00Z")) == (
        "sfc-demo/fw-abc: no interface eth3 on this node, and the pod has been Ready for over"
        " 30 s (it has no network-status annotation listing its interfaces)"
    )
    assert absent(fw_pod(None, ready_at="2026-12-03T11:59:50Z")) is None  # Ready 10 s only
    assert absent(fw_pod(None)) is None  # not Ready: still starting


@pytest.mark.parametrize(
    "pod",
    [
        None,  # deleted, or not readable
        fw_pod(["eth1", "eth2"], uid="uid-new"),  # a new pod of the same name
        {
            **fw_pod(["eth1"]),
            "metadata": {**fw_pod(["eth1"])["metadata"], "deletionTimestamp": "x"},
        },
    ],
    ids=["no-pod", "replaced", "terminating"],
)
def test_no_verdict_on_a_pod_that_is_not_the_endpoints_any_more(pod: dict[str, Any] | None) -> None:
    assert absent(pod) is None


def test_retries_back_off_to_a_cap() -> None:
    delays = [retry_delay(n, first=1.0, cap=30.0) for n in range(7)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert retry_delay(10_000, first=0.2, cap=5.0) == 5.0
