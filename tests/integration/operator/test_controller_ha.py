"""Two controller replicas (Kopf peering): only the highest-priority live one acts.

Covers: a second replica started while the first is active stays paused (no reconcile, no
write) while the first follows a scaling event; when the first stops, the second takes over and
follows the next scaling event; the objects are never duplicated.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from sfc_k8s.operator.controller import Controller
from tests.integration.operator.controller_support import (
    Cluster,
    chain_body,
    controller_config,
    endpoints,
    eventually,
    running,
)


def writes(controller: Controller) -> int:
    return sum(controller.stats[k] for k in ("xc_create", "xc_patch", "xc_delete", "status_patch"))


def test_only_the_leader_acts_and_the_other_takes_over(cluster: Cluster) -> None:
    for name, app in [("client-0", "client"), ("fw-0", "firewall"), ("server-0", "server")]:
        cluster.create_pod(name, app)
    body = chain_body()
    cluster.create_chain(body)

    def firewall_pods() -> list[str]:
        return [pod for pod, _ in endpoints(cluster.xcs()["web-client-firewall"], "b")]

    leader = Controller(controller_config(cluster.apiserver, cluster.ns, priority=200))
    standby = Controller(controller_config(cluster.apiserver, cluster.ns, priority=100))
    leading: AbstractContextManager[Any] | None = running(leader)
    leading.__enter__()  # stopped half-way, while the standby keeps running
    try:
        eventually(lambda: firewall_pods() == ["fw-0"])
        with running(standby):
            eventually(lambda: len(cluster.peers()) == 2)  # the standby has joined
            cluster.create_pod("fw-1", "firewall")
            eventually(lambda: firewall_pods() == ["fw-0", "fw-1"])
            assert writes(leader) > 0
            assert standby.stats["reconcile"] == 0
            assert writes(standby) == 0
            # the leader stops and leaves the peering: the standby resumes
            assert leading is not None
            leading.__exit__(None, None, None)
            leading = None
            cluster.create_pod("fw-2", "firewall")
            eventually(lambda: firewall_pods() == ["fw-0", "fw-1", "fw-2"], timeout=20)
            assert writes(standby) > 0
            assert sorted(cluster.xcs()) == ["web-client-firewall", "web-firewall-server"]
    finally:
        if leading is not None:
            leading.__exit__(None, None, None)
