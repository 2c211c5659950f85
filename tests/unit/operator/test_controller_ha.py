"""Two controller replicas (Kopf peering): only the highest-priority live one acts.

Covers: a second replica started while the first is active stays paused (no reconcile, no
write) while the first follows a scaling event; when the first stops, the second takes over and
follows the next scaling event; the objects are never duplicated. A leader in its own process
killed with SIGKILL (no goodbye to the peering) hands over once its peering lifetime is over:
the standby follows the next scaling event with exactly the writes it needs, creates and
deletes nothing, and settles. A Node deleted while a replica was paused (its index still
holds the Node it listed before, and the deletion event never reaches it): once that replica
leads again, the Node's agent finalizer goes from the CrossConnections.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from sfc_k8s.api.nodes import agent_finalizer
from sfc_k8s.operator.controller import Controller
from tests.fixtures.controller import (
    PEERING,
    Cluster,
    chain_body,
    controller_config,
    endpoints,
    eventually,
    running,
)
from tests.nettools import unique


def leader_argv(cluster: Cluster) -> list[str]:
    """A controller in its own process, so that it can die without a word (no peering
    goodbye), leading over the in-process ones (priority 100)."""
    return [sys.executable, "-m", "sfc_k8s.cli", "controller",
            "--kubeconfig", str(cluster.apiserver.kubeconfig), "--namespace", cluster.ns,
            "--peering", PEERING, "--priority", "200", "--peering-lifetime", "5",
            "--log-format", "plain"]  # fmt: skip


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


def test_a_leader_killed_with_sigkill_hands_over_without_duplicate_writes(
    cluster: Cluster, tmp_path: Path
) -> None:
    for name, app in [("client-0", "client"), ("fw-0", "firewall"), ("server-0", "server")]:
        cluster.create_pod(name, app)
    cluster.create_chain(chain_body())

    def firewall_pods() -> list[str]:
        return [pod for pod, _ in endpoints(cluster.xcs()["web-client-firewall"], "b")]

    def firewall_status() -> dict[str, int]:
        return dict(cluster.chain("web")["status"]["functions"]["firewall"])

    with (tmp_path / "leader.log").open("w") as log:
        leader = subprocess.Popen(leader_argv(cluster), stdout=log, stderr=subprocess.STDOUT)
    try:
        eventually(lambda: firewall_pods() == ["fw-0"], timeout=30)
        standby = Controller(controller_config(cluster.apiserver, cluster.ns, priority=100))
        with running(standby):
            eventually(lambda: len(cluster.peers()) == 2)
            cluster.create_pod("fw-1", "firewall")
            eventually(lambda: firewall_pods() == ["fw-0", "fw-1"])
            # The leader's work is all written (its status too) before it dies.
            eventually(lambda: firewall_status()["readyReplicas"] == 2)
            assert writes(standby) == 0 and standby.stats["reconcile"] == 0
            versions = {n: xc["metadata"]["resourceVersion"] for n, xc in cluster.xcs().items()}

            leader.send_signal(signal.SIGKILL)
            assert leader.wait(timeout=10) == -signal.SIGKILL
            # The dead leader's peering entry still claims the lead until its lifetime ends:
            # the standby waits for that, then resumes, re-lists and finds everything in place.
            cluster.create_pod("fw-2", "firewall")
            eventually(lambda: firewall_pods() == ["fw-0", "fw-1", "fw-2"], timeout=30)
            # fw-2 also changes the chain's status (its firewall count): once that is written,
            # the work is done; from then on nothing more is written (no ping-pong).
            eventually(lambda: firewall_status()["readyReplicas"] == 3)
            eventually(lambda: standby.stats["status_patch"] >= 1)  # counted once answered
            settled = writes(standby)
            assert standby.stats["status_patch"] == 1, standby.stats
            assert standby.stats["xc_create"] == 0, standby.stats  # no object made again
            assert standby.stats["xc_delete"] == 0, standby.stats
            # fw-2 changes each of the two links once (its endpoint on side b of one, a of the
            # other); nothing else of the dead leader's work is written again.
            assert standby.stats["xc_patch"] == 2, standby.stats
            assert sorted(cluster.xcs()) == sorted(versions)
            time.sleep(1.0)  # a window for a late duplicate to show
            assert writes(standby) == settled, standby.stats
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.wait(timeout=10)


def test_a_node_deleted_while_paused_loses_its_finalizer_after_the_takeover(
    cluster: Cluster, tmp_path: Path
) -> None:
    lost = unique("lost")
    cluster.ensure_node(lost)
    for name, app in [("client-0", "client"), ("fw-0", "firewall"), ("server-0", "server")]:
        cluster.create_pod(name, app)
    cluster.create_chain(chain_body())
    finalizer = agent_finalizer(lost)

    def held() -> list[str]:
        return [n for n, x in cluster.xcs().items() if finalizer in x["metadata"]["finalizers"]]

    first = Controller(controller_config(cluster.apiserver, cluster.ns, priority=100))
    with running(first):
        eventually(lambda: len(cluster.xcs()) == 2)
        for name, xc in cluster.xcs().items():  # as the lost node's agent does
            kept = xc["metadata"].get("finalizers") or []
            cluster.merge(cluster.xc_path(name), {"metadata": {"finalizers": [*kept, finalizer]}})
        assert len(held()) == 2
        with (tmp_path / "leader.log").open("w") as log:
            leader = subprocess.Popen(leader_argv(cluster), stdout=log, stderr=subprocess.STDOUT)
        try:
            eventually(lambda: len(cluster.peers()) == 2, timeout=30)
            # The first replica has paused: a new replica pod is the leader's work alone.
            reconciles = first.stats["reconcile"]
            cluster.create_pod("fw-1", "firewall")
            eventually(lambda: len(endpoints(cluster.xcs()["web-client-firewall"], "b")) == 2)
            time.sleep(0.5)
            assert first.stats["reconcile"] == reconciles, first.stats

            leader.send_signal(signal.SIGKILL)
            assert leader.wait(timeout=10) == -signal.SIGKILL
            cluster.request("DELETE", f"/api/v1/nodes/{lost}")
            # Paused until the dead leader's lifetime (5 s) is over, then the first replica
            # re-lists, with the lost Node still in its index.
            eventually(lambda: held() == [], timeout=30)
        finally:
            if leader.poll() is None:
                leader.kill()
                leader.wait(timeout=10)
