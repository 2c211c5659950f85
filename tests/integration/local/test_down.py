"""``sfc-k8s local down`` after a crash: it removes what a killed node runtime left behind.

Covers: pods' processes, network namespaces, host veths and IPAM leases of a runtime killed
with SIGKILL are all removed by ``down`` (from the records in the state directory and by name
prefix), and the state directory is removed; a ``local up`` that fails half-way removes what
it had started.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from sfc_k8s.local import cli as local_cli
from sfc_k8s.local.layout import Layout, list_netns, pid_alive, processes_in_netns
from sfc_k8s.local.node.cni import NETWORKS_ANNOTATION
from tests.integration.local.cluster import local_cluster, ready


def test_down_cleans_up_after_a_crashed_runtime(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ipam = tmp_path / "ipam"
    with local_cluster(state) as cluster:
        ns = cluster.namespace()
        config = {
            "cniVersion": "1.0.0",
            "name": "leased",
            "type": "ptp",
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.98.0.0/24"}]],
                "dataDir": str(ipam),
            },
        }
        cluster.kube.request(
            "POST",
            f"/apis/k8s.cni.cncf.io/v1/namespaces/{ns}/network-attachment-definitions",
            body={
                "metadata": {"name": "leased", "namespace": ns},
                "spec": {"config": json.dumps(config)},
            },
        )
        spec = {"containers": [{"name": "main", "command": ["sleep", "1000"]}]}
        meta = {"annotations": {NETWORKS_ANNOTATION: "leased"}}
        cluster.create_pod(ns, "survivor", spec, **meta)
        pod = cluster.wait_pod(ns, "survivor", ready)
        netns = cluster.netns(pod)
        pids = processes_in_netns(netns)
        assert pids and list(ipam.rglob("10.98.*"))

        cluster.runtime.send_signal(signal.SIGKILL)  # a crash: nothing gets cleaned up
        cluster.runtime.wait()
        assert os.path.exists(f"/run/netns/{netns}") and processes_in_netns(netns)

        local_cli.down(cluster.layout, progress=local_cli.Progress(quiet=True))
        assert list_netns(cluster.layout.netns_prefix) == []
        assert not any(pid_alive(pid) for pid in pids)
        assert list(ipam.rglob("10.98.*")) == [], "the lease was released by CNI DEL"
        assert not state.exists()


def test_failed_up_tears_down_what_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    layout = Layout(state)
    # The API server starts; registering the CRDs then fails: up must undo the API server.
    monkeypatch.setattr(local_cli, "KUBECTL", str(tmp_path / "no-kubectl"))
    with pytest.raises(local_cli.LocalClusterError, match="did not start"):
        local_cli.up(layout, progress=local_cli.Progress(quiet=True), timeout=30)
    assert not state.exists()
    assert list_netns(layout.netns_prefix) == []
    assert not local_cli.running(layout)
    for entry in Path("/proc").iterdir():  # no process of that cluster (the API server) is left
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            assert str(state).encode() not in cmdline, cmdline
