"""deploy/ as the local cluster runs it (`sfc-k8s local up`, the operator as pods).

Covers:
- a container of the project's image (any registry, tag or digest) runs this environment's
  `sfc-k8s` as the Dockerfile's ENTRYPOINT, with its args (its CMD without); another image's
  container runs exactly its command and args, and nothing without one;
- the Dockerfile's ENTRYPOINT/CMD and the image's CNI folder are the ones the local cluster
  stands in for;
- the agent's `--bpffs-root` is where the local cluster looks for a node's pins, its metrics
  port where `local up` asks for its readiness, and the CNI
  socket and spool the node runtime gives a node's shim are the agent's hostPath mounts;
- the local overlay for a non-default MTU is deploy/ plus the agent's `--tunnel-mtu`, nothing
  else; the default MTU applies deploy/ itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sfc_k8s.cni import install
from sfc_k8s.dataplane import tunnel
from sfc_k8s.local import operator_pods
from sfc_k8s.local.layout import AGENT_BPFFS_DIR, Layout
from sfc_k8s.local.node import images
from sfc_k8s.local.node.cni import NODE_PATHS
from sfc_k8s.local.node.volumes import hostpath_source

ROOT = Path(__file__).resolve().parents[3]
AGENT = operator_pods.AGENT
VENV_SFC_K8S = str(Path(sys.executable).parent / "sfc-k8s")


def _build(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _agent(docs: list[dict[str, Any]]) -> dict[str, Any]:
    ds = next(d for d in docs if (d["kind"], d["metadata"]["name"]) == ("DaemonSet", AGENT))
    spec: dict[str, Any] = ds["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize(
    ("spec", "argv"),
    [
        ({"image": "sfc-k8s:0.1.0", "args": ["agent", "--cni-server"]},
         [VENV_SFC_K8S, "agent", "--cni-server"]),
        ({"image": "ghcr.io/x/sfc-k8s@sha256:ab", "args": ["install-cni"]},
         [VENV_SFC_K8S, "install-cni"]),
        ({"image": "registry:5000/sfc-k8s"}, [VENV_SFC_K8S, "controller"]),
        ({"image": "sfc-k8s:1", "command": ["sfc-k8s", "agent"]}, [VENV_SFC_K8S, "agent"]),
        ({"image": "sfc-k8s:1", "command": ["/bin/sh", "-c", "true"]}, ["/bin/sh", "-c", "true"]),
        ({"image": "busybox", "command": ["sleep"], "args": ["1"]}, ["sleep", "1"]),
        ({"image": "busybox", "args": ["sfc-k8s"]}, ["sfc-k8s"]),
        ({"image": "my-sfc-k8s:1"}, []),
    ],
)  # fmt: skip
def test_container_argv(spec: dict[str, Any], argv: list[str]) -> None:
    assert images.container_argv(spec) == argv


def test_the_dockerfile_is_what_the_local_cluster_stands_in_for() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert f'ENTRYPOINT ["{images.ENTRYPOINT[0]}"]' in dockerfile
    assert f'CMD ["{images.DEFAULT_CMD[0]}"]' in dockerfile
    assert f"{images.IMAGE_DATA_DIR}/cni" == install.SOURCE_DIR


def test_the_agent_pins_and_cni_paths_are_where_the_local_cluster_looks(tmp_path: Path) -> None:
    agent = _agent(_build(ROOT / "deploy"))
    args = agent["containers"][0]["args"]
    root = args[args.index("--bpffs-root") + 1]
    assert root == f"/sys/fs/bpf/{AGENT_BPFFS_DIR}"
    layout = Layout(tmp_path)
    assert str(hostpath_source(layout, "node-1", root)) == layout.bpffs_root("node-1")
    ports = {p["name"]: p["containerPort"] for p in agent["containers"][0]["ports"]}
    assert ports["metrics"] == operator_pods.METRICS_PORT  # where `up` asks for /readyz
    host_paths = {v["hostPath"]["path"] for v in agent["volumes"] if "hostPath" in v}
    assert set(NODE_PATHS) <= host_paths


def test_the_mtu_overlay_only_sizes_the_agents_tunnel(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "state")
    assert operator_pods.kustomization(layout, 1500) == operator_pods.deploy_dir()
    overlay = operator_pods.kustomization(layout, 1400)
    assert overlay.parent == layout.state_dir and not os.path.isabs(
        yaml.safe_load((overlay / "kustomization.yaml").read_text())["resources"][0]
    )
    base, local = _build(operator_pods.deploy_dir()), _build(overlay)
    args = _agent(local)["containers"][0]["args"]
    assert args[-1] == f"--tunnel-mtu={tunnel.mtu_for(1400)}"
    _agent(local)["containers"][0]["args"] = args[:-1]
    assert local == base
