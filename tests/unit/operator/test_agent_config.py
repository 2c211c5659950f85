"""The node agent's settings and per-node identities (sfc_k8s.operator.agent).

Covers: flags and environment (node required, metrics port 0 = off, namespaces, defaults);
the per-node annotation prefix and finalizer (valid Kubernetes names, distinct per node, bounded
for long node names); kubeconfig reading (server, token, relative paths, errors).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sfc_k8s.operator.agent import (
    AgentConfig,
    agent_finalizer,
    annotation_prefix,
    config_from_args,
)
from sfc_k8s.operator.kube import KubeconfigError, connection_from_kubeconfig

QUALIFIED = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def test_flags_make_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "SFC_K8S_NODE",
        "NODE_NAME",
        "KUBECONFIG",
        "SFC_K8S_KUBECONFIG",
        "SFC_K8S_TUNNEL_PORT",
        "SFC_K8S_TUNNEL_ADDRESS",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("SFC_K8S_NAMESPACES", raising=False)
    config = config_from_args(
        ["--node", "n1", "--bpffs-root", "/sys/fs/bpf/x", "--metrics-port", "0", "-n", "a"]
    )
    assert config == AgentConfig(
        node="n1",
        bpffs_root="/sys/fs/bpf/x",
        metrics_port=None,
        namespaces=("a",),
        tunnel_port=4792,  # the data plane's default: no common CNI uses it
        attach_interfaces=True,  # the command line attaches interfaces as they appear
    )
    assert not config_from_args(["--node", "n1", "--no-attach-interfaces"]).attach_interfaces
    assert config_from_args(["--node", "n1", "--metrics-port", "9000"]).metrics_port == 9000
    flags = ["--node", "n1", "--tunnel-port", "0", "--tunnel-address", "10.0.0.7"]
    no_tunnel = config_from_args(flags)
    assert no_tunnel.tunnel_port is None and no_tunnel.tunnel_address == "10.0.0.7"


@pytest.mark.parametrize(
    "flags",
    [["--tunnel-port", "70000"], ["--tunnel-address", "eth1"], ["--tunnel-address", "::1"]],
)
def test_bad_tunnel_flags_are_refused(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        config_from_args(["--node", "n1", *flags])
    assert flags[0] in capsys.readouterr().err


def test_environment_supplies_node_and_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SFC_K8S_NODE", raising=False)
    monkeypatch.setenv("NODE_NAME", "from-downward-api")
    monkeypatch.setenv("SFC_K8S_NAMESPACES", "x,y")
    config = config_from_args([])
    assert config.node == "from-downward-api"
    assert config.namespaces == ("x", "y")
    assert config_from_args(["-A"]).namespaces == ()


def test_node_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SFC_K8S_NODE", raising=False)
    monkeypatch.delenv("NODE_NAME", raising=False)
    with pytest.raises(SystemExit):
        config_from_args([])


@pytest.mark.parametrize("node", ["node-1", "ip-10-0-0-1.eu-west-1.compute.internal", "n" * 253])
def test_per_node_keys_are_valid_and_distinct(node: str) -> None:
    finalizer = agent_finalizer(node)
    assert QUALIFIED.fullmatch(finalizer)
    assert len(finalizer.split("/")[1]) <= 63
    assert len(annotation_prefix(node)) <= 253
    assert agent_finalizer(node) != agent_finalizer(node + "x")
    assert annotation_prefix(node) != annotation_prefix(node + "x")


def test_kubeconfig_current_context_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        """
apiVersion: v1
kind: Config
current-context: local
contexts:
- name: local
  context: {cluster: c, user: u, namespace: ns1}
- name: other
  context: {cluster: nowhere, user: u}
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443", certificate-authority: ca.crt}
users:
- name: u
  user: {tokenFile: token}
"""
    )
    info = connection_from_kubeconfig(kubeconfig)
    assert info.server == "https://127.0.0.1:6443"
    assert info.ca_path == str(tmp_path / "ca.crt")
    assert info.token == "s3cret" and info.scheme == "Bearer"
    assert info.default_namespace == "ns1"


def test_kubeconfig_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match="failed to read kubeconfig"):
        connection_from_kubeconfig(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.write_text("current-context: nope\ncontexts: []\n")
    with pytest.raises(KubeconfigError, match="current-context 'nope'"):
        connection_from_kubeconfig(bad)


def test_agent_without_credentials_exits_with_one_line(tmp_path: Path) -> None:
    """Kopf retries a failing login forever: the agent must refuse to start instead."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "SFC_K8S_KUBECONFIG")}
    base = [sys.executable, "-m", "sfc_k8s.cli", "agent", "--node", "n1", "--no-kernel-check"]
    for flags, expected in (
        (["--kubeconfig", str(tmp_path / "missing")], "failed to read kubeconfig"),
        ([], "no credentials"),
    ):
        proc = subprocess.run(
            [*base, "--metrics-port", "0", *flags],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 1, proc.stderr
        assert expected in proc.stderr
        assert "Traceback" not in proc.stderr
