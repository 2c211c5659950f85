"""Removing links from a chain: one delete call and one event per removed link (issue 16, item 3).

The controller runs for real (Kopf via KopfRunner) against the local API server; the test plays
the node agents by holding their finalizer on every CrossConnection, as agents do while they
take a link out of the data plane, so the removed CrossConnections stay (terminating) for a
while and the chain is reconciled several times meanwhile. Covers:
- a chain edited with ``kubectl apply`` to drop two of its three links: each dropped
  CrossConnection gets exactly one DELETE request (counted at the API server) and the chain
  exactly one ``CrossConnectionDeleted`` event, however many reconciles run while the agents
  still hold their finalizers; the kept link is untouched; once the finalizers go, the objects
  are gone and the status lists the kept link only.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from sfc_k8s.api import GROUP, XC_PLURAL
from sfc_k8s.local.apiserver.store import Store
from sfc_k8s.operator.controller import Controller
from tests.fixtures.controller import (
    Cluster,
    chain_body,
    controller_config,
    eventually,
    running,
)

AGENT_FINALIZER = "sfc-k8s.io/agent-node-1"


def probed_chain() -> dict[str, Any]:
    """The web chain plus a probe on the firewall's eth3: three links."""
    body = chain_body("web")
    spec = body["spec"]
    spec["functions"][1]["interfaces"].append("eth3")
    spec["functions"].append(
        {"name": "probe", "selector": {"matchLabels": {"app": "probe"}}, "interfaces": ["eth1"]}
    )
    spec["links"].append(
        {
            "name": "firewall-probe",
            "a": {"function": "firewall", "interface": "eth3"},
            "b": {"function": "probe", "interface": "eth1"},
        }
    )
    return body


def count_xc_deletes(monkeypatch: pytest.MonkeyPatch, store: Store) -> list[str]:
    """Names of the CrossConnections the API server received a DELETE for, in order."""
    calls: list[str] = []
    delete: Callable[..., Any] = store.delete

    def counting(rtype: Any, namespace: str | None, name: str, *args: Any, **kw: Any) -> Any:
        if rtype.key == (GROUP, XC_PLURAL):
            calls.append(name)
        return delete(rtype, namespace, name, *args, **kw)

    monkeypatch.setattr(store, "delete", counting)
    return calls


def test_removing_two_links_deletes_each_once_with_one_event(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, app in [
        ("client-0", "client"),
        ("fw-0", "firewall"),
        ("server-0", "server"),
        ("probe-0", "probe"),
    ]:
        cluster.create_pod(name, app)
    body = probed_chain()
    body["metadata"]["namespace"] = cluster.ns
    deletes = count_xc_deletes(monkeypatch, cluster.apiserver.server.store)

    def apply(chain: dict[str, Any]) -> None:
        cluster.apiserver.kubectl("apply", "-f", "-", input=json.dumps(chain), check=True)

    def deleted_events() -> list[str]:
        items = cluster.get(f"/api/v1/namespaces/{cluster.ns}/events")["items"]
        return [e["message"] for e in items if e["reason"] == "CrossConnectionDeleted"]

    controller = Controller(controller_config(cluster.apiserver, cluster.ns))
    with running(controller):
        apply(body)
        xcs = eventually(lambda: len(cluster.xcs()) == 3 and cluster.xcs())
        for name in xcs:  # the agent of node-1 programs them
            cluster.merge(cluster.xc_path(name), {"metadata": {"finalizers": [AGENT_FINALIZER]}})
        kept = cluster.xcs()["web-client-firewall"]["metadata"]["resourceVersion"]

        edited = copy.deepcopy(body)
        edited["spec"]["links"] = edited["spec"]["links"][:1]
        apply(edited)
        gone = {"web-firewall-server", "web-firewall-probe"}
        eventually(lambda: all(cluster.xcs()[n]["metadata"].get("deletionTimestamp") for n in gone))
        # while the agents still hold their finalizers, the chain is reconciled again and again
        # (its own status write, pod events, the agents' reports on the terminating objects);
        # counted from before the first of them, which may be reconciled at once
        before = controller.stats["reconcile"]
        for i, name in enumerate(sorted(gone)):
            cluster.merge(
                cluster.xc_path(name) + "/status",
                {"status": {"nodes": {"node-1": {"ready": False, "message": f"removing {i}"}}}},
            )
        cluster.set_ready("server-0", False)
        cluster.set_ready("server-0", True)
        eventually(lambda: controller.stats["reconcile"] >= before + 2)
        for name in gone:  # the agents are done: they drop their finalizers
            cluster.merge(cluster.xc_path(name), {"metadata": {"finalizers": None}})
        eventually(lambda: sorted(cluster.xcs()) == ["web-client-firewall"])
        eventually(lambda: sorted(cluster.chain("web")["status"]["links"]) == ["client-firewall"])
        eventually(lambda: len(deleted_events()) >= 2)
        cluster.set_ready("server-0", False)  # one more reconcile after the objects are gone
        eventually(lambda: cluster.chain("web")["status"]["readyFunctions"] == "3/4")

    assert sorted(deletes) == sorted(gone)
    assert sorted(deleted_events()) == [
        f"deleted CrossConnection {name}: its link is no longer in the chain"
        for name in sorted(gone)
    ]
    assert cluster.xcs()["web-client-firewall"]["metadata"]["resourceVersion"] == kept
