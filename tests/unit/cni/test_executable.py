"""The ``sfc-cni`` executable's contract with runtimes, and its lean import graph (no root).

Behaviours covered:
- bad environment or config, given to the real executable as a runtime would, gives exit 1 and
  exactly one JSON error object on stdout (the config's cniVersion when supported, the spec's
  code, a message naming what to fix), logs on stderr only;
- VERSION works through the generated launcher and through the venv's console script;
- the launcher runs the interpreter without ``site`` and imports the plugin from this tree;
- the ADD path imports no heavy module (typing, dataclasses, json, re, enum, subprocess, socket,
  ctypes, hashlib, logging, pyroute2, the ``sfc_k8s.api`` package): start-up is the plugin's cost
  (docs/cni.md), so a regression here is a latency regression.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import sfc_k8s
from sfc_k8s.cni import launcher
from sfc_k8s.cni.launcher import launcher_source, usable_python
from tests.fixtures.cni import Cni, invoke

SRC = str(Path(sfc_k8s.__file__).resolve().parents[1])
REPO = Path(SRC).parent
HEAVY = (
    "typing",
    "dataclasses",
    "json",
    "re",
    "enum",
    "subprocess",
    "socket",
    "ctypes",
    "hashlib",
    "logging",
    "contextlib",
    "pyroute2",
    "sfc_k8s.api",
)
GOOD = {"cniVersion": "0.4.0", "name": "net", "type": "sfc-cni"}


@pytest.fixture
def cni(cni_path: Path) -> Cni:
    return Cni(cni_path, container_id="c1", netns="/run/netns/never-opened", ifname="eth1")


@pytest.mark.parametrize(
    ("conf", "env", "expected"),
    [
        ("{not json", {}, (6, "1.1.0", 'stdin="{not json": expected a JSON object')),
        ({**GOOD, "cniVersion": "0.2.0"}, {}, (1, "1.1.0", "0.2.0")),
        ({**GOOD, "name": ""}, {}, (7, "0.4.0", "name")),
        ({**GOOD, "ipMasq": True}, {}, (2, "0.4.0", "ipMasq=true")),
        ({**GOOD, "mtu": 10}, {}, (7, "0.4.0", "mtu=10")),
        (GOOD, {"CNI_COMMAND": "FROB"}, (4, "1.1.0", "CNI_COMMAND")),
        (GOOD, {"CNI_CONTAINERID": ""}, (4, "1.1.0", "CNI_CONTAINERID")),
        (GOOD, {"CNI_IFNAME": "averylonginterface"}, (4, "1.1.0", "1 to 15 bytes")),
        (GOOD, {"CNI_IFNAME": "eth/1"}, (4, "1.1.0", "CNI_IFNAME")),
        (GOOD, {"CNI_NETNS": ""}, (4, "1.1.0", "CNI_NETNS")),
        (GOOD, {"CNI_ARGS": "broken"}, (4, "1.1.0", "CNI_ARGS")),
    ],
)
def test_error_objects(
    cni: Cni, conf: dict[str, object] | str, env: dict[str, str], expected: tuple[int, str, str]
) -> None:
    code, version, words = expected
    out = cni("ADD", conf, env=env)
    assert out.rc == 1
    assert out.stdout.count("\n") == 1
    assert out.body["code"] == code
    assert out.body["cniVersion"] == version
    assert words in out.body["msg"]
    assert out.body["msg"] in out.stderr


def test_missing_command_and_undecodable_stdin(cni: Cni) -> None:
    assert cni("ADD", GOOD, drop=("CNI_COMMAND",)).code == 4
    assert cni("ADD", b"\xff\xfe{}").code == 6


def test_check_before_0_4_0_is_a_version_error(cni: Cni) -> None:
    conf = {**GOOD, "cniVersion": "0.3.1", "prevResult": {"cniVersion": "0.3.1"}}
    out = cni("CHECK", conf)
    assert out.code == 1
    assert out.body["cniVersion"] == "0.3.1"
    assert out.body["msg"] == 'cniVersion="0.3.1": expected 0.4.0 or later for CHECK'


def test_version_through_launcher_and_console_script(cni: Cni) -> None:
    assert cni.ok("VERSION", {"cniVersion": "1.0.0"})["supportedVersions"][-1] == "1.1.0"
    console = Path(sys.executable).parent / "sfc-cni"
    out = invoke(console, cni.env("VERSION"), "")
    assert out.rc == 0 and out.body["cniVersion"] == "1.1.0"


def test_launcher_source(cni_path: Path) -> None:
    text = launcher_source(python="/x/python", root="/x/src")
    assert text.startswith("#!/x/python -IS\n")
    assert "sys.path.insert(0, '/x/src')" in text
    written = (cni_path / "sfc-cni").read_text()
    python = written.split()[0].removeprefix("#!")
    assert written == launcher_source(python=python)
    assert usable_python(python)
    assert (cni_path / "sfc-cni").stat().st_mode & 0o111


def test_launcher_picks_the_first_usable_python(tmp_path: Path) -> None:
    dest = tmp_path / "sfc-cni"
    assert (
        launcher.main(["--python", "/no/such/python", "--python", sys.executable, str(dest)]) == 0
    )
    assert dest.read_text().startswith(f"#!{sys.executable} -IS\n")
    assert launcher.main(["--python", str(tmp_path), str(dest)]) == 0  # not runnable: fallback
    assert dest.read_text().startswith(f"#!{sys.executable} -IS\n")
    assert launcher.main([]) == 2
    assert not usable_python("/no/such/python")


def test_add_path_imports_stay_lean() -> None:
    probe = f"""
import sys
sys.path.insert(0, {SRC!r})
from sfc_k8s import coldstart
from sfc_k8s.cni import config, ipam, netlink, netns, plugin, result
conf = config.parse_config(
    '{{"cniVersion": "1.1.0", "name": "n", "type": "sfc-cni", "macSeed": "s",'
    ' "ipam": {{"type": "host-local"}}}}', "ADD")
plugin.host_name_for(config.parse_env({{"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c",
                                        "CNI_IFNAME": "eth1"}}))
result.format_result("1.1.0", [], result.IpConfig(), pod_interface=1)
ipam.delegate_config(conf.raw, conf.text, "1.1.0")
netlink.Link
coldstart.json_loads(coldstart.json_dumps([1]))
home = netns.current_netns()
try:
    netns.setns(home)  # binds setns(2) first; without root the call itself may be refused
except PermissionError:
    pass
print(coldstart.json_dumps(sorted(sys.modules)))
"""
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(proc.stdout))
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    assert "sfc_k8s.api.models" not in loaded
