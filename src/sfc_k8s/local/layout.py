"""Where the local cluster keeps its state, and how it names what it creates on the host.

Everything ``sfc-k8s local up`` makes on the machine (network namespaces, bpffs folders,
processes, files) is named from one short cluster id derived from the state directory, and
recorded in the state directory before it is created, so that ``local down`` can remove all of
it even after ``up`` or the node runtime crashed: first from the records, then by name prefix.
Used by the CLI, the node runtime and the demo.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_STATE_DIR = "/var/lib/sfc-k8s-local"
STATE_DIR_ENV = "SFC_K8S_LOCAL_DIR"
NETNS_PREFIX = "sfcl-"
BPFFS_BASE = "/sys/fs/bpf/sfc-k8s-local"
# The agent's pins below a node's /sys/fs/bpf: deploy/base/agent.yaml's `--bpffs-root
# /sys/fs/bpf/sfc-k8s` (a test of tests/unit/deploy checks the two agree).
AGENT_BPFFS_DIR = "sfc-k8s"
NETNS_DIR = Path("/run/netns")


def default_state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


def node_name(index: int) -> str:
    """Name of the ``index``-th (1-based) emulated node."""
    return f"node-{index}"


def pod_cidr(index: int) -> str:
    """The pod CIDR of the ``index``-th node (its cluster network, routed over the underlay)."""
    return f"10.244.{index}.0/24"


@dataclass(frozen=True)
class Layout:
    """Paths and names of one local cluster, all derived from its state directory."""

    state_dir: Path

    @property
    def cluster_id(self) -> str:
        digest = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()
        return digest[:6]

    @property
    def netns_prefix(self) -> str:
        """Every network namespace of this cluster starts with this."""
        return f"{NETNS_PREFIX}{self.cluster_id}-"

    def node_netns(self, node: str) -> str:
        return f"{self.netns_prefix}{node}"

    @property
    def underlay_netns(self) -> str:
        """The namespace holding the bridge that joins the nodes (see ``underlay.py``)."""
        return f"{self.netns_prefix}underlay"

    def pod_netns(self, pod_uid: str) -> str:
        return f"{self.netns_prefix}pod-{pod_uid}"

    def node_bpffs(self, node: str) -> str:
        """The node's ``/sys/fs/bpf``: a folder of the host's bpffs (``hostPath`` volumes of
        ``/sys/fs/bpf`` resolve there, ``node/volumes.py``)."""
        return f"{BPFFS_BASE}/{self.node_netns(node)}"

    def bpffs_root(self, node: str) -> str:
        """Where the node's agent pins its data plane: ``--bpffs-root`` of the agent DaemonSet
        (``deploy/base/agent.yaml``) inside the node's ``/sys/fs/bpf``."""
        return f"{self.node_bpffs(node)}/{AGENT_BPFFS_DIR}"

    def node_root(self, node: str) -> Path:
        """The node's own directory tree: its pods' ``hostPath`` volumes resolve inside it
        (``node/volumes.py``)."""
        return self.state_dir / "nodes" / node / "root"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def pki_dir(self) -> Path:
        """The cluster's CA, certificates and keys (``apiserver/pki.py``)."""
        return self.state_dir / "pki"

    def component_kubeconfig(self, component: str) -> Path:
        """The kubeconfig of an operator component, carrying its service account's token."""
        return self.state_dir / "kubeconfigs" / f"{component}.kubeconfig"

    @property
    def cluster_file(self) -> Path:
        return self.state_dir / "cluster.json"

    @property
    def lock_file(self) -> Path:
        """Held while ``cluster.json`` is read and rewritten (the CLI and the supervisor)."""
        return self.state_dir / "cluster.lock"

    @property
    def supervisor_lock(self) -> Path:
        """Held by the active supervisor for as long as it lives (its standby waits on it)."""
        return self.state_dir / "supervisor.lock"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pods_dir(self) -> Path:
        return self.state_dir / "pods"

    @property
    def ipam_dir(self) -> Path:
        return self.state_dir / "ipam"

    def pod_dir(self, pod_uid: str) -> Path:
        return self.pods_dir / pod_uid

    def log(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"


def read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write atomically (a crash never leaves half a record)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True))
    tmp.replace(path)


def pid_alive(pid: int, cmd_hint: str | None = None) -> bool:
    """Whether ``pid`` runs (and, given ``cmd_hint``, its command line contains it)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return cmd_hint is None or cmd_hint.encode() in cmdline


def processes_in_netns(netns: str) -> list[int]:
    """PIDs of the processes whose network namespace is the named one."""
    try:
        target = os.stat(NETNS_DIR / netns)
    except OSError:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            st = os.stat(entry / "ns" / "net")
            if (st.st_ino, st.st_dev) == (target.st_ino, target.st_dev):
                found.append(int(entry.name))
    return found


def list_netns(prefix: str) -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))
    except OSError:
        return []
