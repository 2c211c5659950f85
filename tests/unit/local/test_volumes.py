"""The pure parts of a local pod's volumes and env (``sfc_k8s.local.node.volumes``, ``pod``).

Covers: where a ``hostPath`` lands (the node's own tree; the node's bpffs subtree for
``/sys/fs/bpf``; the host's ``/proc``, ``/sys``, ``/dev``, ``/run/netns``; ``..`` cannot climb
out); the service-account volume added unless the pod opts out or mounts that path itself;
mounts with ``subPath`` and ``readOnly`` (API-content volumes always read-only), a mount of an
undeclared volume refused; ``resourceFieldRef`` with divisors, rounded up; probe ports by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sfc_k8s.local.layout import Layout
from sfc_k8s.local.node.pod import resource_value
from sfc_k8s.local.node.probes import ProbeError, resolve_port
from sfc_k8s.local.node.volumes import (
    SERVICE_ACCOUNT_DIR,
    VolumeError,
    automount_volume,
    container_mounts,
    hostpath_source,
)

LAYOUT = Layout(Path("/var/lib/sfcl-test"))


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/etc/cni/net.d", "/var/lib/sfcl-test/nodes/node-2/root/etc/cni/net.d"),
        ("/opt/cni/bin/", "/var/lib/sfcl-test/nodes/node-2/root/opt/cni/bin"),
        ("/run/sfc", "/var/lib/sfcl-test/nodes/node-2/root/run/sfc"),
        ("/../../etc/passwd", "/var/lib/sfcl-test/nodes/node-2/root/etc/passwd"),
        ("/sys/fs/bpf", LAYOUT.node_bpffs("node-2")),
        ("/sys/fs/bpf/sfc-k8s", LAYOUT.bpffs_root("node-2")),
        ("/sys/fs/bpfx", "/sys/fs/bpfx"),
        ("/proc", "/proc"),
        ("/sys/class/net", "/sys/class/net"),
        ("/dev/net/tun", "/dev/net/tun"),
        ("/run/netns", "/run/netns"),
        ("/var/run/netns/x", "/run/netns/x"),
        ("/var/run/sfc", "/var/lib/sfcl-test/nodes/node-2/root/run/sfc"),
    ],
)
def test_host_path_mapping(path: str, expected: str) -> None:
    assert str(hostpath_source(LAYOUT, "node-2", path)) == expected


def pod(**spec: Any) -> dict[str, Any]:
    containers = spec.pop("containers", [{"name": "c"}])
    return {"metadata": {"name": "p", "uid": "u"}, "spec": {"containers": containers, **spec}}


def test_service_account_volume_unless_opted_out_or_mounted() -> None:
    volume = automount_volume(pod())
    assert volume is not None
    sources = volume["projected"]["sources"]
    assert [next(iter(s)) for s in sources] == ["serviceAccountToken", "configMap", "downwardAPI"]
    assert automount_volume(pod(automountServiceAccountToken=False)) is None
    own = [{"name": "c", "volumeMounts": [{"name": "x", "mountPath": SERVICE_ACCOUNT_DIR}]}]
    assert automount_volume(pod(containers=own)) is None


def test_container_mounts() -> None:
    paths = {"cfg": Path("/v/cfg"), "data": Path("/v/data"), "host": Path("/n/root/etc")}
    spec = {
        "volumeMounts": [
            {"name": "cfg", "mountPath": "/etc/app"},
            {"name": "data", "mountPath": "/data", "readOnly": True},
            {"name": "host", "mountPath": "/host"},
        ]
    }
    mounts = container_mounts(spec, paths, read_only_volumes={"cfg"})
    assert [(m.source, m.target, m.read_only) for m in mounts] == [
        ("/v/cfg", "/etc/app", True),
        ("/v/data", "/data", True),
        ("/n/root/etc", "/host", False),
    ]
    with pytest.raises(VolumeError, match="'nope': the pod has no volume of that name"):
        container_mounts({"volumeMounts": [{"name": "nope", "mountPath": "/x"}]}, paths, set())
    with pytest.raises(VolumeError, match="must be relative"):
        bad = {"volumeMounts": [{"name": "data", "mountPath": "/x", "subPath": "../up"}]}
        container_mounts(bad, paths, set())


def test_sub_path(tmp_path: Path) -> None:
    (tmp_path / "b").write_text("beta")
    spec = {"volumeMounts": [{"name": "v", "mountPath": "/etc/b", "subPath": "b"}]}
    (mount,) = container_mounts(spec, {"v": tmp_path}, set())
    assert (mount.source, mount.target) == (str(tmp_path / "b"), "/etc/b")


@pytest.mark.parametrize(
    ("resources", "ref", "expected"),
    [
        ({"limits": {"memory": "64Mi"}}, {"resource": "limits.memory", "divisor": "1Mi"}, "64"),
        ({"limits": {"memory": "64Mi"}}, {"resource": "limits.memory"}, str(64 * 2**20)),
        ({"limits": {"cpu": "250m"}}, {"resource": "limits.cpu"}, "1"),
        ({"limits": {"cpu": "250m"}}, {"resource": "limits.cpu", "divisor": "1m"}, "250"),
        ({"limits": {"cpu": "2500m"}}, {"resource": "limits.cpu"}, "3"),
        ({"limits": {"memory": "1Gi"}}, {"resource": "requests.memory", "divisor": "1Gi"}, "1"),
    ],
)
def test_resource_field_ref(resources: dict[str, Any], ref: dict[str, Any], expected: str) -> None:
    container = {"name": "c", "resources": resources}
    assert resource_value({"containers": [container]}, container, ref) == expected


def test_probe_port_by_number_or_name() -> None:
    container = {"name": "c", "ports": [{"name": "metrics", "containerPort": 9469}]}
    assert resolve_port(8080, container) == 8080
    assert resolve_port("8080", container) == 8080
    assert resolve_port("metrics", container) == 9469
    with pytest.raises(ProbeError, match="'health' is not a port name of container 'c'"):
        resolve_port("health", container)
