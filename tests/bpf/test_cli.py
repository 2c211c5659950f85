"""The ``sfc-k8s dp`` CLI as a user runs it (a subprocess per call) on real veths:

- link add / show (table and JSON) / endpoint drain, activate, add, del / sessions / link del,
  each call a new process adopting the pinned state; the TCX attachments stay pinned between
  calls; the root comes from --bpffs-root or $SFC_K8S_BPFFS_ROOT;
- every error (unknown interface, unknown link, duplicate link, interface already in a link or
  listed twice, bad link name, not an endpoint, too many interfaces, bad arguments) prints one
  line on stderr, exits non-zero and leaves the state exactly as it was;
- remote endpoints added (--remote NODE_IP --id N), listed with their node, drained and removed
  by id; links created with a cluster id;
- the tunnel set (idempotently), shown (table and JSON), refused on a port a common CNI uses,
  on another port than the existing device's or on an interface that is no such device, and
  deleted with its device;
- calls running at the same time are serialised by the root's lock (no slot given twice);
- under ``ip netns exec`` (a private /sys, so a private bpffs) it refuses instead of pinning
  state that would vanish.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sfc_k8s.dataplane import Dataplane, maps, structs
from tests.bpf.conftest import SESSIONS, private_root
from tests.nettools import Janitor, run, unique

SFC_K8S = str(Path(sys.executable).parent / "sfc-k8s")


class Cli:
    def __init__(self, root: str) -> None:
        self.root = root

    def __call__(self, *args: str, env_root: bool = False) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        argv = [SFC_K8S, "dp"]
        if env_root:
            env["SFC_K8S_BPFFS_ROOT"] = self.root
        else:
            argv += ["--bpffs-root", self.root]
        argv += ["--session-table-size", str(SESSIONS), *args]
        return subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=60, check=False
        )

    def ok(self, *args: str, env_root: bool = False) -> str:
        done = self(*args, env_root=env_root)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def state(self) -> tuple[Any, list[str]]:
        """Everything a failed call must leave alone: every link's status and the pins (read
        in this process: adopting takes a millisecond, a CLI call a few hundred)."""
        pins = sorted(str(p.relative_to(self.root)) for p in Path(self.root).rglob("*"))
        with Dataplane(self.root) as dp:
            return dp.statuses(), pins


@pytest.fixture
def cli(janitor: Janitor) -> Iterator[Cli]:
    root = private_root()

    def teardown() -> None:
        if os.path.exists(root):
            with Dataplane(root) as dp:
                dp.destroy()

    janitor.add(teardown)
    yield Cli(root)


@pytest.fixture
def ifs(janitor: Janitor) -> list[str]:
    return [janitor.veth(unique(f"cli{i}"), unique(f"clp{i}"), up=False)[0] for i in range(6)]


def test_lifecycle_through_the_cli(cli: Cli, ifs: list[str]) -> None:
    assert cli.ok("show") == "no links\n"
    cli.ok("link", "add", "xc1", "--side-a", f"{ifs[0]},{ifs[1]}", "--side-b", ifs[2])
    table = cli.ok("show", "xc1", env_root=True)
    assert "link xc1 (id 1, cluster id 1): 0 sessions" in table
    for name in ifs[:3]:
        assert name in table
    assert f"tcx_{socket.if_nametoindex(ifs[0])}" in os.listdir(
        os.path.join(cli.root, "links", "xc1")
    )

    cli.ok("endpoint", "drain", "xc1", "a", ifs[1])
    cli.ok("endpoint", "add", "xc1", "b", ifs[3])
    status = json.loads(cli.ok("show", "xc1", "--json"))
    states = {(e["side"], e["ifname"]): e["state"] for e in status["endpoints"]}
    assert states == {
        ("a", ifs[0]): "active",
        ("a", ifs[1]): "draining",
        ("b", ifs[2]): "active",
        ("b", ifs[3]): "active",
    }
    assert status["drops"]["malformed"] == 0
    cli.ok("endpoint", "activate", "xc1", "a", ifs[1])
    cli.ok("endpoint", "del", "xc1", "b", ifs[2])
    status = json.loads(cli.ok("show", "--json"))["links"][0]
    assert [(e["side"], e["ifname"], e["state"]) for e in status["endpoints"]] == [
        ("a", ifs[0], "active"),
        ("a", ifs[1], "active"),
        ("b", ifs[3], "active"),
    ]
    assert json.loads(cli.ok("sessions", "xc1", "--json")) == []

    cli.ok("endpoint", "add", "xc1", "b", "--remote", "10.77.0.2", "--id", "40")
    cli.ok("endpoint", "drain", "xc1", "b", "--id", "40")
    status = json.loads(cli.ok("show", "xc1", "--json"))
    remote = [e for e in status["endpoints"] if e["node"]]
    assert [(e["side"], e["id"], e["node"], e["ifindex"], e["state"]) for e in remote] == [
        ("b", 40, "10.77.0.2", 0, "draining")
    ]
    assert "10.77.0.2" in cli.ok("show", "xc1")
    cli.ok("endpoint", "del", "xc1", "b", "--id", "40")
    assert all(not e["node"] for e in json.loads(cli.ok("show", "xc1", "--json"))["endpoints"])

    cli.ok("link", "del", "xc1")
    assert cli.ok("show") == "no links\n"
    assert os.listdir(os.path.join(cli.root, "links")) == []


def test_errors_are_one_line_and_change_nothing(cli: Cli, ifs: list[str]) -> None:
    cli.ok("link", "add", "xc1", "--side-a", ifs[0], "--side-b", ifs[1])
    cli.ok("link", "add", "xc2", "--side-a", ifs[2])
    before = cli.state()
    too_many = ",".join(f"nope{i}" for i in range(1025))
    failures = {
        ("link", "add", "xc3", "--side-a", "no-such-if0"): "no interface named 'no-such-if0'",
        ("link", "add", "xc1", "--side-a", ifs[3]): "already exists",
        ("link", "add", "xc3", "--side-a", ifs[0]): "already an endpoint of 'xc1'",
        ("link", "add", "xc3", "--side-a", ifs[3], "--side-b", ifs[3]): "listed twice",
        ("link", "add", "bad/name", "--side-a", ifs[3]): "invalid link name",
        ("link", "add", "xc3", "--side-a", too_many): "more than 1024",
        ("link", "del", "nolink"): "no link named 'nolink'",
        ("endpoint", "add", "nolink", "a", ifs[3]): "no link named 'nolink'",
        ("endpoint", "add", "xc1", "a", "no-such-if0"): "no interface named",
        ("endpoint", "add", "xc1", "b", ifs[2]): "already an endpoint of 'xc2'",
        ("endpoint", "del", "xc1", "a", ifs[3]): "is not an endpoint",
        ("endpoint", "drain", "xc1", "b", ifs[0]): "is not an endpoint of side b",
        ("show", "nolink"): "no link named 'nolink'",
        ("endpoint", "add", "xc1", "b", "--remote", "10.0.0.300", "--id", "5"): (
            "invalid node address '10.0.0.300'"
        ),
        ("endpoint", "add", "xc1", "b", "--remote", "10.0.0.3"): "has no id",
        ("endpoint", "add", "xc1", "b", "--remote", "10.0.0.3", "--id", "4096"): (
            "invalid endpoint id 4096"
        ),
        ("endpoint", "add", "xc1", "b", "--remote", "10.0.0.3", "--id", "1"): (
            "endpoint id 1 is already taken"
        ),
        ("endpoint", "add", "xc1", "b", ifs[3], "--remote", "10.0.0.3"): "not both",
        ("endpoint", "drain", "xc1", "b", "--id", "77"): "endpoint id 77 is not an endpoint",
        ("endpoint", "del", "xc1", "b", "--remote", "10.0.0.3"): "--remote is for add",
        ("link", "add", "xc3", "--side-a", ifs[3], "--id", "1"): "cluster id 1 is taken by 'xc1'",
        ("link", "add", "xc3", "--side-a", ifs[3], "--id", "65536"): "invalid link cluster id",
        ("endpoint", "add", "xc1", "c", ifs[3]): "invalid choice",
        ("link", "frobnicate"): "invalid choice",
    }
    for argv, message in failures.items():
        done = cli(*argv)
        assert done.returncode != 0, argv
        assert message in done.stderr, (argv, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert cli.state() == before, argv


def test_commands_on_an_empty_root_load_nothing(cli: Cli, ifs: list[str]) -> None:
    assert json.loads(cli.ok("show", "--json")) == {"links": [], "tunnel": None, "tunnel_drops": {}}
    done = cli("link", "del", "xc1")
    assert done.returncode == 1 and "no link named 'xc1'" in done.stderr
    assert not os.path.exists(cli.root)


def test_concurrent_calls_are_serialised(cli: Cli, ifs: list[str]) -> None:
    cli.ok("link", "add", "xc1", "--side-a", ifs[0])
    env = dict(os.environ)
    procs = [
        subprocess.Popen(
            [SFC_K8S, "dp", "--bpffs-root", cli.root, "endpoint", "add", "xc1", "b", name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ifs[1:]
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    status = json.loads(cli.ok("show", "xc1", "--json"))
    assert sorted(e["ifname"] for e in status["endpoints"] if e["side"] == "b") == sorted(ifs[1:])
    with Dataplane(cli.root) as dp:
        index = maps.walk(dp.map_fd(structs.MAP_IFSLOTS), ctypes.c_uint32, ctypes.c_uint32)
        slots = [slot.value for _, slot in index]
        assert len(set(slots)) == len(slots) == len(ifs)  # one slot each, none shared


def test_refuses_a_private_bpffs_under_ip_netns_exec(cli: Cli, janitor: Janitor) -> None:
    # `ip netns exec` gives the command a fresh /sys of its own: pins there would vanish.
    ns = janitor.netns()
    argv = [SFC_K8S, "dp", "--bpffs-root", cli.root, "link", "add", "xc1"]
    done = run(*argv, netns=ns, check=False)
    assert done.returncode == 1
    assert "private mount namespace" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not os.path.exists(cli.root)


def test_tunnel_through_the_cli(cli: Cli, ifs: list[str], janitor: Janitor) -> None:
    name, port = unique("sfctv"), random.randrange(20000, 60000)
    janitor.add(lambda: run("ip", "link", "del", name, check=False))
    args = ("tunnel", "set", "--name", name, "--port", str(port), "--mtu", "1400")
    cli.ok(*args, "--no-udp-csum")
    cli.ok(*args, "--no-udp-csum")  # a restarted agent: adopted, nothing changes
    show = json.loads(cli.ok("show", "--json"))
    assert show["tunnel"] == {
        "ifname": name,
        "ifindex": socket.if_nametoindex(name),
        "port": port,
        "mtu": 1400,
        "udp_csum": False,
    }
    assert show["tunnel_drops"] == {
        "tunnel-no-key": 0,
        "tunnel-unknown-node": 0,
        "tunnel-unknown-link": 0,
    }
    assert f"tunnel {name} (ifindex" in cli.ok("show")
    failures = {
        ("tunnel", "set", "--name", unique("sfctv"), "--port", "4789"): "VXLAN (IANA) uses it",
        ("tunnel", "set", "--name", name, "--port", str(port + 1)): f"on UDP port {port}",
        ("tunnel", "set", "--name", ifs[0], "--port", str(port)): "not a flow-based VXLAN",
        ("tunnel", "set", "--name", name, "--port", str(port), "--mtu", "20"): "invalid tunnel MTU",
    }
    for argv, message in failures.items():
        done = cli(*argv)
        assert done.returncode == 1 and message in done.stderr, (argv, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1
    assert json.loads(cli.ok("show", "--json"))["tunnel"] == show["tunnel"]
    cli.ok("tunnel", "del")
    assert json.loads(cli.ok("show", "--json"))["tunnel"] is None
    with pytest.raises(OSError):
        socket.if_nametoindex(name)
