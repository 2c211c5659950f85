"""The compiled ``sfc-cni`` shim, installed by ``sfc-k8s install-cni``, with the agent's CNI server.

Behaviours covered:
- the installer fills an empty directory tree (the shim, ``host-local`` and ``static``); from a
  chroot holding only that tree plus ``/proc``, ``/sys`` and ``/dev`` (a private mount namespace:
  no Python, no checkout, no libc) VERSION, ADD, CHECK and DEL of an L3 attachment run, reaching
  the CNI server outside through its socket placed inside the tree, with the real ``host-local``
  the installer copied: the pod end gets its leased address, DEL removes veth and lease;
- DEL with the agent down succeeds and is spooled (the veth and the lease stay); ADD then fails
  with code 11 naming the socket; the server replays the spool when it starts: veth gone, lease
  released, spool empty;
- a spooled DEL replayed after the pod's next sandbox took the same host interface name (same
  pod UID and interface, another container and netns) removes neither that sandbox's veth nor
  its lease, and still releases its own lease;
- a DEL spooled while the server runs (the shim could not reach it: here, through another socket
  path) is replayed once no call has come for the rescan interval;
- 12 pods' ADDs at once, then their DELs at once, through the server's pre-forked workers: all
  succeed, each pod gets its own lease, and all are released;
- the shim is replaced atomically (twice per ADD/DEL cycle, alternating two builds) while ADDs
  and DELs run in a loop: none fails;
- bad input: a plugin error (bad JSON, code 6) is passed through exactly; ``agentSocket`` that is
  not an absolute path (code 7); stdin over the size limit (code 7); a malformed request sent
  straight to the server's socket gets a CNI error object (code 4).

The agent is the CNI server process run on the host, as the DaemonSet's agent runs in its
container. There the node's CNI bin directory is mounted at the same path as on the node, so the
``CNI_PATH`` a runtime passes names the IPAM plugins for both; here the host sees the tree's bin
directory under the tree's path, so ``CNI_PATH`` names it both ways (``/opt/cni/bin`` inside the
chroot, ``<tree>/opt/cni/bin`` for the server).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from sfc_k8s.api.naming import host_ifname
from sfc_k8s.cni import install, wire
from tests.fixtures.cni import (
    BASE_PATH,
    Cni,
    Outcome,
    addresses,
    invoke,
    l2_conf,
    l3_conf,
    leases,
    link,
)
from tests.fixtures.cni_shim import CniServer, build_shim
from tests.nettools import Janitor, run, unique

pytestmark = pytest.mark.root

BIN = "/opt/cni/bin"


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the image holds in /opt/sfc-k8s/cni: the shim and the IPAM plugins to copy."""
    source = tmp_path_factory.mktemp("image")
    build_shim(source)
    for name in install.IPAM_PLUGINS:
        (source / name).write_bytes(Path("/usr/lib/cni", name).read_bytes())
        (source / name).chmod(0o755)
    return source


@pytest.fixture
def tree(tmp_path: Path, image_dir: Path) -> Path:
    """An empty directory tree the installer fills, as a node's root would be."""
    root = tmp_path / "root"
    root.mkdir()
    assert install.main(["--bin-dir", f"{root}{BIN}", "--from", str(image_dir)]) == 0
    for mount_point in ("proc", "sys", "dev"):
        (root / mount_point).mkdir()
    return root


RESCAN = 0.5  # the server's --rescan-seconds here, so that a rescan is seen in a test


@pytest.fixture
def agent(tree: Path, tmp_path: Path) -> Iterator[CniServer]:
    """The CNI server, its socket and spool at their default paths inside the tree."""
    server = CniServer(
        tree / wire.DEFAULT_SOCKET.lstrip("/"),
        tree / wire.DEFAULT_SPOOL_DIR.lstrip("/"),
        tmp_path / "server.log",
        rescan=RESCAN,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def in_chroot(tree: Path, command: str, conf: dict[str, Any], pod: dict[str, str]) -> Outcome:
    """Run the installed shim inside ``tree`` with only /proc, /sys and /dev mounted.

    The mounts are made in a private mount namespace (``unshare``), so they vanish with it.
    """
    mounts = " && ".join(f"mount --rbind /{d} {tree}/{d}" for d in ("proc", "sys", "dev"))
    script = f"{mounts} && exec chroot {tree} {BIN}/sfc-cni"
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
    env = {"PATH": BASE_PATH, "CNI_COMMAND": command, **pod}
    proc = subprocess.run(
        argv, input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=60, check=False
    )
    return Outcome(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def pod_env(janitor: Janitor, tree: Path) -> tuple[dict[str, str], str]:
    """The CNI_* variables of a new pod attachment (its netns made), and its host end's name."""
    netns = janitor.netns("sfcs")
    uid = unique("uid", 20)
    env = {
        "CNI_CONTAINERID": unique("ctr", 24),
        "CNI_NETNS": f"/run/netns/{netns}",
        "CNI_IFNAME": "eth1",
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_UID={uid}",
        "CNI_PATH": f"{BIN}:{tree}{BIN}",
    }
    host = host_ifname(uid, "eth1")
    janitor.add(lambda: run("ip", "link", "del", host, check=False))
    return env, host


def on_host(conf: dict[str, Any], agent: CniServer) -> dict[str, Any]:
    """``conf`` for the shim run on the host: the server's socket and spool named in it."""
    return {
        **conf,
        wire.SOCKET_KEY: str(agent.socket_path),
        wire.SPOOL_KEY: str(agent.spool_dir),
    }


def test_installed_tree_runs_every_command_from_a_chroot(
    tree: Path, agent: CniServer, janitor: Janitor, data_dir: Path
) -> None:
    files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if not p.is_dir())
    assert files == [
        "opt/cni/bin/host-local",
        "opt/cni/bin/sfc-cni",
        "opt/cni/bin/static",
        wire.DEFAULT_SOCKET.lstrip("/"),
    ]
    pod, host = pod_env(janitor, tree)
    conf = l3_conf("1.0.0", data_dir, macSeed="shim/eth1")

    version = in_chroot(tree, "VERSION", {"cniVersion": "0.4.0"}, pod)
    assert version.rc == 0 and version.body["cniVersion"] == "0.4.0", version
    added = in_chroot(tree, "ADD", conf, pod)
    assert added.rc == 0, added
    assert added.body["ips"][0]["address"] == "10.77.0.2/24"
    assert "10.77.0.2/24" in addresses("eth1", pod["CNI_NETNS"].rsplit("/", 1)[1])
    assert leases(data_dir) == ["10.77.0.2"]
    checked = in_chroot(tree, "CHECK", {**conf, "prevResult": added.body}, pod)
    assert checked.rc == 0, checked
    deleted = in_chroot(tree, "DEL", conf, pod)
    assert deleted.rc == 0, deleted
    assert link(host) is None
    assert leases(data_dir) == []


def test_del_with_the_agent_down_is_spooled_and_replayed(
    tree: Path, agent: CniServer, janitor: Janitor, data_dir: Path
) -> None:
    pod, host = pod_env(janitor, tree)
    conf = on_host(l3_conf("1.0.0", data_dir), agent)
    shim = tree / BIN.lstrip("/") / "sfc-cni"
    env = {"PATH": BASE_PATH, **pod}
    added = invoke(shim, {**env, "CNI_COMMAND": "ADD"}, conf)
    assert added.rc == 0, added
    agent.stop()

    deleted = invoke(shim, {**env, "CNI_COMMAND": "DEL"}, conf)
    assert deleted.rc == 0 and deleted.stdout == "", deleted
    assert "DEL spooled" in deleted.stderr
    assert len(agent.spooled()) == 1
    assert link(host) is not None and leases(data_dir) == ["10.77.0.2"]
    refused = invoke(shim, {**env, "CNI_COMMAND": "ADD"}, conf)
    assert refused.code == 11
    assert refused.body["msg"].startswith(
        f"the sfc-k8s node agent is not reachable at {agent.socket_path} (No such file"
    )

    agent.start()  # replays the spool before it serves its first connection
    _wait_spool_empty(agent)
    assert link(host) is None
    assert leases(data_dir) == []


def test_replayed_del_spares_the_next_sandbox_of_the_pod(
    tree: Path, agent: CniServer, janitor: Janitor, data_dir: Path, cni_path: Path
) -> None:
    old, host = pod_env(janitor, tree)
    conf = on_host(l3_conf("1.0.0", data_dir), agent)
    shim = tree / BIN.lstrip("/") / "sfc-cni"
    env = {"PATH": BASE_PATH, **old}
    assert invoke(shim, {**env, "CNI_COMMAND": "ADD"}, conf).rc == 0
    agent.stop()
    assert "DEL spooled" in invoke(shim, {**env, "CNI_COMMAND": "DEL"}, conf).stderr
    run("ip", "link", "del", host)  # the old sandbox is torn down, its veth with it
    # The pod's next sandbox: same pod UID and interface (so the same host end name), another
    # container and netns; ADDed by the plugin itself while the agent is down.
    uid = old["CNI_ARGS"].rsplit("=", 1)[1]
    new = Cni(cni_path, container_id=unique("ctr", 24), netns=janitor.netns("sfcs"))
    new.args = {"IgnoreUnknown": "1", "K8S_POD_UID": uid}
    plain = l3_conf("1.0.0", data_dir)
    janitor.add(lambda: new("DEL", plain))
    new.ok("ADD", plain)
    assert leases(data_dir) == ["10.77.0.2", "10.77.0.3"]

    agent.start()  # replays the old sandbox's DEL
    _wait_spool_empty(agent)
    found = link(host)
    assert found is not None and new.container_id in found["ifalias"]
    assert link("eth1", new.netns) is not None
    assert leases(data_dir) == ["10.77.0.3"]  # the old sandbox's lease, not the new one's
    new.ok("DEL", plain)
    assert link(host) is None and leases(data_dir) == []


def _wait_spool_empty(agent: CniServer, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while agent.spooled() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert agent.spooled() == []


def test_del_spooled_while_the_server_runs_is_replayed(
    tree: Path, agent: CniServer, janitor: Janitor, data_dir: Path, tmp_path: Path
) -> None:
    pod, host = pod_env(janitor, tree)
    conf = on_host(l3_conf("1.0.0", data_dir), agent)
    shim = tree / BIN.lstrip("/") / "sfc-cni"
    env = {"PATH": BASE_PATH, **pod}
    assert invoke(shim, {**env, "CNI_COMMAND": "ADD"}, conf).rc == 0
    astray = {**conf, wire.SOCKET_KEY: str(tmp_path / "elsewhere.sock")}
    deleted = invoke(shim, {**env, "CNI_COMMAND": "DEL"}, astray)
    assert deleted.rc == 0 and "DEL spooled" in deleted.stderr, deleted
    assert leases(data_dir) == ["10.77.0.2"]
    _wait_spool_empty(agent)
    assert link(host) is None
    assert leases(data_dir) == []


def test_parallel_calls(tree: Path, agent: CniServer, janitor: Janitor, data_dir: Path) -> None:
    shim = tree / BIN.lstrip("/") / "sfc-cni"
    conf = on_host(l3_conf("1.0.0", data_dir), agent)
    pods = [pod_env(janitor, tree)[0] for _ in range(12)]

    def call(command: str, pod: dict[str, str]) -> Outcome:
        return invoke(shim, {"PATH": BASE_PATH, "CNI_COMMAND": command, **pod}, conf)

    with ThreadPoolExecutor(len(pods)) as pool:
        added = list(pool.map(lambda pod: call("ADD", pod), pods))
        assert [out.rc for out in added] == [0] * len(pods), [o for o in added if o.rc]
        assert len(leases(data_dir)) == len(pods)
        deleted = list(pool.map(lambda pod: call("DEL", pod), pods))
    assert [out.rc for out in deleted] == [0] * len(pods), [o for o in deleted if o.rc]
    assert leases(data_dir) == []


def test_shim_replaced_while_adds_run(
    tree: Path, agent: CniServer, janitor: Janitor, image_dir: Path, tmp_path: Path
) -> None:
    bin_dir = tree / BIN.lstrip("/")
    builds = [image_dir / "sfc-cni", tmp_path / "sfc-cni-padded"]
    builds[1].write_bytes(builds[0].read_bytes() + b"\0" * 4096)  # another file, same program
    pod, _ = pod_env(janitor, tree)
    env = {"PATH": BASE_PATH, **pod}
    conf = on_host(l2_conf("1.0.0", name="shim-swap"), agent)
    failures: list[str] = []
    stop = threading.Event()

    def cycles() -> None:
        while not stop.is_set():
            for command in ("ADD", "DEL"):
                try:  # a half-written file fails to start (ETXTBSY, EACCES, ENOEXEC)
                    out = invoke(bin_dir / "sfc-cni", {**env, "CNI_COMMAND": command}, conf)
                except OSError as err:
                    failures.append(f"{command}: {err}")
                    continue
                if out.rc != 0:
                    failures.append(f"{command}: {out}")

    worker = threading.Thread(target=cycles)
    worker.start()
    installs = 0
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            build = builds[installs % 2]
            install.install_file(build.read_bytes(), str(bin_dir), "sfc-cni")
            installs += 1
            time.sleep(0.005)
    finally:
        stop.set()
        worker.join()
    assert installs > 50
    assert failures == []
    assert [p.name for p in bin_dir.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_bad_input_gets_a_cni_error(
    tree: Path, agent: CniServer, janitor: Janitor, tmp_path: Path
) -> None:
    pod, _ = pod_env(janitor, tree)
    shim = tree / BIN.lstrip("/") / "sfc-cni"
    env = {"PATH": BASE_PATH, "CNI_COMMAND": "ADD", **pod}

    bad_json = invoke(shim, env, f'{{"agentSocket": "{agent.socket_path}", "name": '.encode())
    assert bad_json.code == 6
    assert bad_json.body["msg"].startswith("stdin=")  # the plugin's own message, passed through

    relative = invoke(shim, env, l2_conf("1.0.0", agentSocket="run/cni.sock"))
    assert relative.code == 7
    assert relative.body == {
        "cniVersion": "1.0.0",
        "code": 7,
        "msg": 'agentSocket="run/cni.sock": expected an absolute path',
    }

    huge = invoke(shim, env, l2_conf("1.0.0", pad="x" * wire.MAX_REQUEST))
    assert huge.code == 7 and "too large" in huge.body["msg"]

    nowhere = invoke(shim, env, l2_conf("0.4.0", agentSocket=str(tmp_path / "none.sock")))
    assert nowhere.code == 11 and nowhere.body["cniVersion"] == "0.4.0"
    assert str(tmp_path / "none.sock") in nowhere.body["msg"]

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.connect(str(agent.socket_path))
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
        raw.shutdown(socket.SHUT_WR)
        reply = b"".join(iter(lambda: raw.recv(65536), b""))
    code, out, _ = wire.decode_reply(reply)
    assert code == 1
    body = json.loads(out)
    assert body["code"] == 4 and body["msg"].startswith("malformed request from the shim")
    assert os.path.exists(agent.socket_path)  # the server survived it
