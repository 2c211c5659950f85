"""Nodes as the agents see them (``sfc_k8s.api.nodes.node_view``): tunnel address and readiness.

Covers: the InternalIP is the address, the ``sfc-k8s.io/tunnel-address`` annotation overrides
it; a bad annotation falls back to the InternalIP and says why; IPv6-only or missing addresses
make the node unusable; Ready=False, Ready=Unknown, no Ready condition and a deletion in
progress make it not ready.
"""

from __future__ import annotations

from typing import Any

import pytest

from sfc_k8s.api.nodes import (
    TUNNEL_ADDRESS_ANNOTATION,
    agent_finalizer,
    ipv4_address,
    node_view,
    orphan_finalizers,
)


def node(
    ready: str | None = "True",
    addresses: list[tuple[str, str]] | None = None,
    annotation: str | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "n2"}
    if annotation is not None:
        meta["annotations"] = {TUNNEL_ADDRESS_ANNOTATION: annotation}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-03T12:00:00Z"
    pairs = [("Hostname", "n2"), ("InternalIP", "172.18.0.3")] if addresses is None else addresses
    conditions = [] if ready is None else [{"type": "Ready", "status": ready}]
    return {
        "metadata": meta,
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"}, *conditions],
            "addresses": [{"type": t, "address": a} for t, a in pairs],
        },
    }


def test_internal_ip_is_the_address_and_the_annotation_overrides_it() -> None:
    view = node_view(node())
    assert (view.name, view.address, view.ready, view.usable) == ("n2", "172.18.0.3", True, True)
    assert node_view(node(annotation="10.9.0.3")).address == "10.9.0.3"
    bad = node_view(node(annotation="eth1"))
    assert bad.address == "172.18.0.3"
    assert "'eth1' is not a unicast IPv4 address" in bad.problem


@pytest.mark.parametrize(
    "addresses", [[], [("InternalIP", "fd00::3")], [("ExternalIP", "1.2.3.4")]]
)
def test_no_ipv4_internal_ip_makes_the_node_unusable(addresses: list[tuple[str, str]]) -> None:
    view = node_view(node(addresses=addresses))
    assert view.ready and not view.usable
    assert view.problem == "no IPv4 InternalIP in status.addresses"


@pytest.mark.parametrize(
    "body",
    [node("False"), node("Unknown"), node(None), node(deleting=True)],
    ids=["NotReady", "Unknown", "no-condition", "deleting"],
)
def test_lost_nodes_are_not_usable(body: dict[str, Any]) -> None:
    view = node_view(body)
    assert view.address == "172.18.0.3"
    assert not view.ready and not view.usable


def test_ipv4_address() -> None:
    assert ipv4_address("10.0.0.1") == "10.0.0.1"
    for bad in ("0.0.0.0", "127.0.0.1", "224.0.0.1", "fd00::1", "x", None):
        assert ipv4_address(bad) == ""


def test_orphan_finalizers_are_agent_finalizers_of_nodes_that_are_gone() -> None:
    finalizers = [
        agent_finalizer("n1"),
        agent_finalizer("n2"),
        "other.io/keep",
        agent_finalizer("x" * 80),
    ]
    assert orphan_finalizers(finalizers, ["n1", "x" * 80]) == [agent_finalizer("n2")]
    assert orphan_finalizers(finalizers, ["n3"]) == [
        agent_finalizer("n1"),
        agent_finalizer("n2"),
        agent_finalizer("x" * 80),
    ]
    assert orphan_finalizers(finalizers, []) == []  # no Node seen: nothing is known to be gone
