"""Which finalizers ``sfc-k8s uninstall`` removes from a CrossConnection (pure).

Covers: an agent finalizer of a node that is not Ready (or does not exist) goes at once; one of
a Ready node stays until the timeout, then goes; long node names (hashed finalizers) are
matched the same way; finalizers that are not an agent's are never removed.
"""

from __future__ import annotations

from sfc_k8s.api.nodes import agent_finalizer
from sfc_k8s.operator.uninstall import stale_finalizers

LONG = "n" * 70  # its finalizer is hashed


def test_gone_agents_first_then_all_after_the_timeout() -> None:
    finalizers = [agent_finalizer("a"), agent_finalizer("b"), agent_finalizer(LONG), "x.io/keep"]
    assert stale_finalizers(finalizers, ["a", LONG], timed_out=False) == [agent_finalizer("b")]
    assert stale_finalizers(finalizers, ["a", "b", LONG], timed_out=False) == []
    assert stale_finalizers(finalizers, [], timed_out=False) == finalizers[:3]
    assert stale_finalizers(finalizers, ["a", "b", LONG], timed_out=True) == finalizers[:3]
    assert stale_finalizers(["x.io/keep"], [], timed_out=True) == []
