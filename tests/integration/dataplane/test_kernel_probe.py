"""The kernel feature probe run for real on this machine's kernel.

Covers: every feature of ``kernel.FEATURES`` is probed and found on this kernel (6.x: all
present); the probes that need a device leave nothing on the host (no probe interface, no
clsact qdisc on the host's loopback); ``check`` accepts the kernel; without privilege the probe
raises (EPERM) instead of reporting features missing.
"""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from sfc_k8s.dataplane import kernel
from tests.nettools import run

pytestmark = pytest.mark.root


def test_this_kernel_has_every_feature() -> None:
    results = kernel.probe()
    assert set(results) == {f.name for f in kernel.FEATURES}
    assert all(results.values()), results
    result = kernel.check()
    assert result.ok
    assert result.message == f"kernel {platform.release()}: every required feature present."


def test_probe_leaves_nothing_on_the_host() -> None:
    kernel.probe()
    assert run("ip", "link", "show", "sfcprobe0", check=False).returncode != 0
    assert "clsact" not in run("tc", "qdisc", "show", "dev", "lo").stdout


def test_probe_without_privilege_raises() -> None:
    code = (
        "from sfc_k8s.dataplane import kernel\n"
        "from sfc_k8s.dataplane.errors import BpfError\n"
        "try:\n    print(kernel.probe())\n"
        "except BpfError as err:\n    print('errno', err.errno)\n"
    )
    result = subprocess.run(
        ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
         "--inh-caps=-all", sys.executable, "-c", code],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert result.stdout == "errno 1\n", result.stderr
