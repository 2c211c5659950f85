"""What the controller writes for a chain (sfc_k8s.api.chain_plan) and its status patch.

Covers: a CrossConnection missing from the index is created, unless this controller wrote it
and its watch event has not come back (then what it wrote counts as stored); an equal, owned one
is left alone; a different spec is patched with the whole spec (``dataplane`` nulled when the
chain has none); one without this chain's owner or labels gets them back in the same patch; one
labelled for another chain is refused with a message naming both; the agents' report counts
only once the stored object holds the current spec; stale CrossConnections are those of the
chain, owned by it or by nobody, not wanted, and not being deleted already (terminating, or
deleted by this controller); ``status_merge_patch`` nulls what the new status dropped.
"""

from __future__ import annotations

import copy
from typing import Any

from sfc_k8s.api import (
    LinkProgramming,
    compute_links,
    cross_connection_body,
    parse_chain,
)
from sfc_k8s.api.chain_plan import (
    Create,
    Patch,
    Refuse,
    StoredCrossConnection,
    link_report,
    plan_cross_connection,
    stale_cross_connections,
)
from sfc_k8s.api.status import status_merge_patch
from tests.fixtures.chains import pod, web_chain

CHAIN = parse_chain(web_chain())
PODS = [pod("cl-1", "client"), pod("fw-1", "firewall"), pod("sv-1", "server")]
SPEC = compute_links(CHAIN, PODS)[0]
BODY = cross_connection_body(CHAIN, SPEC)


def stored(body: Any = BODY, **changes: Any) -> StoredCrossConnection:
    """The object as the server returns it: what was written plus server fields."""
    full = copy.deepcopy(body)
    full["metadata"] |= {"generation": 2, "uid": "xc-uid", **changes.pop("metadata", {})}
    full |= changes
    return StoredCrossConnection.from_body(full)


def test_missing_is_created_unless_just_written() -> None:
    assert plan_cross_connection(CHAIN, BODY, None) == Create()
    # created by this controller, watch event not back yet: nothing more to do
    assert plan_cross_connection(CHAIN, BODY, None, written=BODY["spec"]) is None


def test_equal_and_owned_is_left_alone() -> None:
    assert plan_cross_connection(CHAIN, BODY, stored()) is None


def test_a_different_spec_is_patched_whole() -> None:
    old = compute_links(CHAIN, PODS[:1])[0]  # no firewall endpoint yet
    action = plan_cross_connection(CHAIN, BODY, stored(cross_connection_body(CHAIN, old)))
    assert action == Patch({"spec": {**BODY["spec"], "dataplane": None}})
    # the index is stale but this controller wrote the current spec already
    existing = stored(cross_connection_body(CHAIN, old))
    assert plan_cross_connection(CHAIN, BODY, existing, written=BODY["spec"]) is None
    # ... and the other way round: what it wrote last is what counts, not the index
    assert isinstance(plan_cross_connection(CHAIN, BODY, stored(), written=old.to_body()), Patch)


def test_a_lost_owner_or_label_is_put_back() -> None:
    orphan = stored(metadata={"ownerReferences": [], "labels": {}})
    action = plan_cross_connection(CHAIN, BODY, orphan)
    assert isinstance(action, Patch)
    assert action.patch["metadata"] == {
        "labels": BODY["metadata"]["labels"],
        "ownerReferences": BODY["metadata"]["ownerReferences"],
    }


def test_another_chains_object_is_refused() -> None:
    theirs = stored(metadata={"labels": {"sfc-k8s.io/chain": "other"}})
    assert plan_cross_connection(CHAIN, BODY, theirs) == Refuse(
        "CrossConnection 'web-client-firewall' already exists for chain 'other'; "
        "rename this chain or the link"
    )


def test_the_agents_report_counts_once_the_object_holds_the_spec() -> None:
    report = {"nodes": {"node-1": {"ready": True, "observedGeneration": 2}}}
    assert link_report(SPEC, BODY, stored(status=report)) == LinkProgramming()
    assert link_report(SPEC, BODY, None) == LinkProgramming(waiting=("node-1",))
    old = cross_connection_body(CHAIN, compute_links(CHAIN, PODS[:1])[0])
    assert link_report(SPEC, BODY, stored(old, status=report)).waiting == ("node-1",)
    failing = {"nodes": {"node-1": {"ready": False, "observedGeneration": 2, "message": "x"}}}
    assert link_report(SPEC, BODY, stored(status=failing)).failed == (("node-1", "x"),)


def test_stale_crossconnections() -> None:
    def xc(name: str, **meta: Any) -> StoredCrossConnection:
        body = copy.deepcopy(BODY)
        body["metadata"]["name"] = name
        return stored(body, metadata=meta)

    existing = [
        xc("web-client-firewall"),  # wanted
        xc("web-gone"),  # a removed link: stale
        xc("web-orphan", ownerReferences=[]),  # lost its owner: ours by its label
        xc(
            "web-foreign",
            ownerReferences=[{"kind": "ServiceFunctionChain", "uid": "x", "controller": True}],
        ),
        xc("web-terminating", deletionTimestamp="2026-12-03T10:00:00Z"),
        xc("web-deleted"),  # deleted by this controller, event not back yet
    ]
    wanted = {"web-client-firewall"}
    assert stale_cross_connections(CHAIN, wanted, existing, deleted={"web-deleted"}) == [
        "web-gone",
        "web-orphan",
    ]


def test_status_merge_patch_nulls_what_was_dropped() -> None:
    old = {
        "observedGeneration": 1,
        "functions": {"a": {"replicas": 1}, "b": {"replicas": 2}},
        "links": {"a-b": {"endpointsA": 1}},
        "legacy": "x",
    }
    new = {"observedGeneration": 2, "functions": {"a": {"replicas": 1}}, "links": {}}
    assert status_merge_patch(new, old, {"links": {"b-c": {}}}) == {
        "observedGeneration": 2,
        "functions": {"a": {"replicas": 1}, "b": None},
        "links": {"a-b": None, "b-c": None},
        "legacy": None,
    }
    assert status_merge_patch(new, new) == new
