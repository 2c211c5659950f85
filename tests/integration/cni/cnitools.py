"""Invoke CNI plugins the way Multus and containerd do: a fresh process, ``CNI_*`` env, stdin.

Shared by the CNI tests (``tests/unit/cni``, ``tests/integration/cni``). ``make_cni_dir`` builds a
``CNI_PATH`` directory like ``make cni-bin`` does (the sfc-cni launcher beside symlinks to the
reference plugins), so the tests run the same executable a runtime would.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sfc_k8s.cni import launcher

REFERENCE_PLUGINS = Path("/usr/lib/cni")
VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
BASE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
MAKE_CNI_PYTHON = "/usr/bin/python3.11"  # the Makefile's CNI_PYTHON: used when present


def make_cni_dir(directory: Path) -> Path:
    """``directory`` with the sfc-cni launcher and links to every reference plugin."""
    directory.mkdir(parents=True, exist_ok=True)
    for plugin in REFERENCE_PLUGINS.iterdir():
        (directory / plugin.name).symlink_to(plugin)
    launcher.main(["--python", MAKE_CNI_PYTHON, str(directory / "sfc-cni")])
    return directory


@dataclass
class Outcome:
    """What one plugin invocation produced."""

    rc: int
    stdout: str
    stderr: str

    @property
    def body(self) -> dict[str, Any]:
        """stdout as JSON (the result, or the error object)."""
        parsed = json.loads(self.stdout)
        assert isinstance(parsed, dict), self.stdout
        return parsed

    @property
    def code(self) -> int:
        assert self.rc != 0, f"expected a failure, got rc 0: {self.stdout}"
        code = self.body["code"]
        assert isinstance(code, int)
        return code


@dataclass
class Cni:
    """One pod attachment's invocation context: container ID, netns, ifname, CNI_ARGS."""

    cni_path: Path
    container_id: str
    netns: str = ""
    ifname: str = "eth1"
    args: dict[str, str] = field(default_factory=dict)
    plugin: str = "sfc-cni"

    def env(self, command: str) -> dict[str, str]:
        env = {
            "PATH": BASE_PATH,
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": self.container_id,
            "CNI_IFNAME": self.ifname,
            "CNI_PATH": str(self.cni_path),
        }
        if self.netns:
            env["CNI_NETNS"] = self.netns if "/" in self.netns else f"/run/netns/{self.netns}"
        if self.args:
            env["CNI_ARGS"] = ";".join(f"{k}={v}" for k, v in self.args.items())
        return env

    def __call__(
        self,
        command: str,
        conf: dict[str, Any] | str | bytes,
        *,
        env: dict[str, str] | None = None,
        drop: tuple[str, ...] = (),
    ) -> Outcome:
        """Run ``command`` with ``conf`` on stdin; ``env`` overrides, ``drop`` removes vars."""
        full = {**self.env(command), **(env or {})}
        for name in drop:
            full.pop(name, None)
        return invoke(self.cni_path / self.plugin, full, conf)

    def ok(self, command: str, conf: dict[str, Any], **kw: Any) -> dict[str, Any]:
        """Run ``command``, assert success and that stdout is JSON (or empty); return it."""
        out = self(command, conf, **kw)
        assert out.rc == 0, f"{command} failed: {out.stdout} {out.stderr}"
        return out.body if out.stdout.strip() else {}


def invoke(binary: Path, env: dict[str, str], conf: dict[str, Any] | str | bytes) -> Outcome:
    if isinstance(conf, dict):
        data = json.dumps(conf).encode()
    elif isinstance(conf, str):
        data = conf.encode()
    else:
        data = conf
    proc = subprocess.run(
        [str(binary)], input=data, env=env, capture_output=True, check=False, timeout=60
    )
    return Outcome(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def leases(data_dir: Path) -> list[str]:
    """host-local's lease files under ``data_dir`` (not its lock or last-reserved markers)."""
    found = []
    for _, _, files in os.walk(data_dir):
        found += [f for f in files if f != "lock" and not f.startswith("last_reserved_ip")]
    return sorted(found)


def l2_conf(version: str, name: str = "sfc-l2", **extra: Any) -> dict[str, Any]:
    """An L2 (no IPAM) sfc-cni network config."""
    return {"cniVersion": version, "name": name, "type": "sfc-cni", **extra}


def l3_conf(
    version: str,
    data_dir: Path,
    *,
    name: str = "sfc-l3",
    subnet: str = "10.77.0.0/24",
    **extra: Any,
) -> dict[str, Any]:
    """An L3 sfc-cni network config with host-local IPAM leasing from ``subnet``."""
    ipam = {
        "type": "host-local",
        "subnet": subnet,
        "routes": [{"dst": "10.78.0.0/16"}],
        "dataDir": str(data_dir),
    }
    return {"cniVersion": version, "name": name, "type": "sfc-cni", "ipam": ipam, **extra}


def ip_json(*cmd: str, netns: str | None = None) -> list[dict[str, Any]]:
    """``ip -j -d CMD`` parsed (an empty list when the object does not exist)."""
    argv = ["ip", "-j", "-d", *cmd]
    if netns:
        argv = ["ip", "-n", netns, "-j", "-d", *cmd]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    parsed = json.loads(proc.stdout)
    assert isinstance(parsed, list)
    return parsed


def link(name: str, netns: str | None = None) -> dict[str, Any] | None:
    found = ip_json("link", "show", "dev", name, netns=netns)
    return found[0] if found else None


def addresses(name: str, netns: str | None = None) -> list[str]:
    """``addr/prefix`` of every address on ``name`` (IPv4 and IPv6)."""
    found = ip_json("addr", "show", "dev", name, netns=netns)
    if not found:
        return []
    return [f"{a['local']}/{a['prefixlen']}" for a in found[0].get("addr_info", [])]


def eui64_link_local(mac: str) -> str:
    """fe80::/64 with the modified EUI-64 interface identifier of ``mac`` (RFC 4291, App. A)."""
    octets = bytes.fromhex(mac.replace(":", ""))
    ident = bytes([octets[0] ^ 0x02]) + octets[1:3] + b"\xff\xfe" + octets[3:]
    groups = [ident[i] << 8 | ident[i + 1] for i in range(0, 8, 2)]
    return "fe80::" + ":".join(f"{g:x}" for g in groups)
