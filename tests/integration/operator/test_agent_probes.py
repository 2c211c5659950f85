"""The node agent's kubelet probes, served on its metrics port, against a running agent.

Covers: ``/healthz`` answers 200 as soon as the server is up; ``/readyz`` answers 503 naming
the reason while the agent cannot list the CrossConnections (their CRD is not installed yet),
then 200 once it can (the CRD applied: the next listing succeeds); ``/metrics`` keeps serving
next to them.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from sfc_k8s.operator.agent import NodeAgent
from tests.integration.operator.test_agent_programming import running_agent, wait_for
from tests.nettools import unique


def _get(agent: NodeAgent, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{agent.metrics.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_health_then_readiness_once_cross_connections_list(apiserver: Any, bpffs_root: str) -> None:
    with running_agent(apiserver, bpffs_root, unique("node"), gc_interval=0.3) as agent:
        assert _get(agent, "/healthz") == (200, "ok\n")
        status, text = _get(agent, "/readyz")
        assert status == 503
        assert text == "not ready: the CrossConnections have not been listed yet\n"
        apiserver.apply_crds()
        wait_for("the agent to be ready", lambda: _get(agent, "/readyz") == (200, "ready\n"))
        assert _get(agent, "/healthz")[0] == 200
        status, text = _get(agent, "/metrics")
        assert status == 200
        assert "sfc_k8s_agent_reconcile_seconds" in text
