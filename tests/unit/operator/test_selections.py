"""Which pods each chain selected (sfc_k8s.operator.selections), for the controller's pod events.

Covers: a pod's chains follow each chain's last reconcile (added, dropped); chains sharing pods
with a chain (excluding itself), before and after a change; a forgotten chain releases its pods
and says which they were; a pod event that changes nothing the controller reads is recognised;
a deleted pod returns the chains that selected it and forgets it.
"""

from __future__ import annotations

from dataclasses import replace

from sfc_k8s.operator.selections import Selections
from tests.fixtures.chains import pod

A, B = ("ns", "a"), ("ns", "b")
P1, P2, P3 = ("default", "p1"), ("default", "p2"), ("default", "p3")


def test_pods_and_chains_follow_the_last_reconcile() -> None:
    sel = Selections()
    sel.record(A, [P1, P2])
    sel.record(B, [P2, P3])
    assert (sel.chains_of(P2), sel.pods_of(A)) == ({A, B}, {P1, P2})
    assert sel.sharing(A) == {B}
    assert sel.sharing(A, [P1]) == set()
    sel.record(A, [P1])  # P2 left chain a
    assert sel.chains_of(P2) == {B}
    assert sel.sharing(A) == set()
    assert sel.forget_chain(B) == {P2, P3}
    assert sel.chains_of(P3) == set()
    assert sel.pods_of(B) == set()


def test_pod_events_that_change_nothing_are_recognised() -> None:
    sel = Selections()
    first = pod("p1", "fw")
    assert sel.pod_changed(first)
    assert not sel.pod_changed(replace(first))  # equal: a container status changed, say
    assert sel.pod_changed(replace(first, ready=False))
    sel.record(A, [first.key])
    assert sel.pod_deleted(first.key) == {A}
    assert sel.chains_of(first.key) == set()
    assert sel.pod_changed(replace(first, ready=False))  # seen afresh after its deletion
