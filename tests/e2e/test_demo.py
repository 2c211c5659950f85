"""End to end: the demo scenario on a fresh 2-node local cluster, then ``local`` commands and
``down``.

Covers: ``local up --nodes 2`` starts API server, node runtimes, controller and agents; the
transparent-firewall example applied with kubectl becomes Ready (interfaces sized for the tunnel)
with the firewall's replicas on both nodes; ping, iperf3 (8 streams) and
long-lived byte-checked TCP flows cross the chain while the firewall scales 2 -> 4 -> 1; every
active replica carries traffic; flows on replicas that remain never move (at least one flow is
on each); no established flow breaks or pauses for long; every iperf3 round moves data; the
scale-in drains; at 2 and 4 replicas long-lived flows cross to the other node's replicas,
byte-exact, seen in both nodes' sessions and tunnel counters; then the autoscaling act: the
custom metrics API served by ``local up`` answers through the aggregation layer, the chain's
HPA reads it, grows the firewall from 1 to several replicas under a UDP ramp (each new one
carrying traffic) and shrinks it back as the ramp ends, the removed replicas draining with
their long-lived flows still flowing byte-exact (an HPA scale-in with draining); every one of
the 29 checks ran and passed; a throughput plot is written;
``kubectl get --raw`` of the custom metrics API answers; ``kubectl autoscale`` (which posts an
``autoscaling/v1`` HPA) makes an HPA that reads in ``v2`` with its CPU target;
``local status``, ``exec``, ``logs`` and ``kubectl logs`` work on the running cluster and
``local up`` again is a no-op; ``local down`` leaves no namespace, bpffs pin, process or state
file behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sfc_k8s.local import cli as local_cli
from sfc_k8s.local.demo import DemoOptions, run
from sfc_k8s.local.layout import Layout, list_netns, read_json


def _sfc_k8s(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sfc_k8s.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _sfc_k8s_kubectl(layout: Layout, *args: str) -> str:
    proc = subprocess.run(
        ["/usr/bin/kubectl", "--kubeconfig", str(layout.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_demo_scenario_then_local_commands_then_down(tmp_path: Path) -> None:
    state = tmp_path / "state"
    layout = Layout(state)
    opts = DemoOptions(
        keep=True,
        dwell=2.0,
        flows=8,
        iperf_seconds=1,
        short_flows=24,
        timeout=90,
        ramp=(3.0, 5.0, 1.0),
        plot=tmp_path / "throughput.png",
    )
    lines: list[str] = []
    try:
        demo = run(layout, opts, out=lines.append)
        failed = [c for c in demo.checks if not c.ok]
        assert demo.checks and not failed, "\n".join(lines)
        names = [c.name for c in demo.checks]
        # 5 before the traffic (cluster, chain, spread, ping, flows), 4 at 2 replicas, 7 at 4
        # (programmed, short flows, traffic, kept, iperf3, flows, cross-node), 7 at 1 (and the
        # drain; one replica is on one node only), 5 of the autoscaling act (metric, grown,
        # shrunk, drained flows, no break), 1 at the end: a check that silently stopped
        # running fails here.
        assert len(names) == 29, "\n".join(lines)
        assert sum(n.startswith(("autoscaling:", "load up:", "load down:")) for n in names) == 5
        assert names[0] == "local cluster up" and names[-1].startswith("no long-lived flow")
        assert sum("kept their replica" in n for n in names) == 2
        assert sum("broke or stalled" in n for n in names) == 5
        assert sum(n.startswith("draining 3 replica") for n in names) == 1
        assert names[2] == "firewall replicas on all 2 nodes"
        assert sum("crossed nodes through the tunnel" in n for n in names) == 2
        assert opts.plot.stat().st_size > 0

        custom = _sfc_k8s_kubectl(layout, "get", "--raw", "/apis/custom.metrics.k8s.io/v1beta2")
        assert "pods/packets_per_second" in custom
        _sfc_k8s_kubectl(
            layout, "autoscale", "deployment", "client", "-n", "sfc-demo",
            "--min", "1", "--max", "2", "--cpu-percent", "60",
        )  # fmt: skip
        v2 = _sfc_k8s_kubectl(
            layout, "get", "horizontalpodautoscalers.v2.autoscaling", "client", "-n", "sfc-demo",
            "-o", "jsonpath={.spec.metrics[0].resource.target.averageUtilization}",
        )  # fmt: skip
        assert v2 == "60"
        again = _sfc_k8s("local", "up", "--state-dir", str(state))  # idempotent
        assert again.returncode == 0 and "already up" in again.stdout, again.stdout + again.stderr
        status = _sfc_k8s("local", "status", "--state-dir", str(state))
        assert status.returncode == 0, status.stdout + status.stderr
        assert str(layout.kubeconfig) in status.stdout
        assert "node-1     Ready" in status.stdout and "node-2     Ready" in status.stdout
        ping = _sfc_k8s(
            "local", "exec", "deploy/client", "-n", "sfc-demo", "--state-dir", str(state),
            "--", "ping", "-c", "1", "-W", "2", "192.168.100.20",
        )  # fmt: skip
        assert ping.returncode == 0, ping.stdout + ping.stderr
        logs = _sfc_k8s(
            "local", "logs", "deploy/server", "-n", "sfc-demo", "-c", "echo",
            "--state-dir", str(state),
        )  # fmt: skip
        assert logs.returncode == 0 and "echo server on :7007" in logs.stdout, logs.stderr
        server_pod = _sfc_k8s_kubectl(
            layout, "get", "pods", "-n", "sfc-demo", "-l", "app=server", "-o", "name"
        ).split()[0]
        kubectl_logs = _sfc_k8s_kubectl(layout, "logs", "-n", "sfc-demo", server_pod, "-c", "echo")
        assert "echo server on :7007" in kubectl_logs
        pids = [int(p["pid"]) for p in read_json(layout.cluster_file)["processes"].values()]
    finally:
        # In this process (the CLI entry point, as `sfc-k8s local down` runs it), so that the
        # processes `up` started from here are reaped by their parent.
        assert local_cli.main(["down", "--state-dir", str(state)]) == 0
    assert list_netns(layout.netns_prefix) == []
    assert not any(Path(layout.bpffs_root(n)).exists() for n in ("node-1", "node-2"))
    assert not state.exists()
    assert not any(os.path.exists(f"/proc/{pid}/cmdline") and _alive(pid) for pid in pids)
    assert _processes_mentioning(str(state)) == []


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
