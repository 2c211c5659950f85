"""A hung `ip` or `tc` reaches the data plane's callers as a DataplaneError.

The agent reports and retries a DataplaneError; any other exception failed its handler with an
untyped error (seen under heavy load: `ip -d -j link show sfc-vxlan0` took over 10 s). A hung
tool cannot be produced on demand, so this is the one place the real binaries are replaced: an
`ip`/`tc` on PATH that sleeps.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sfc_k8s.dataplane import loader, tunnel
from sfc_k8s.dataplane.errors import BpfError, DataplaneError


@pytest.fixture
def hung_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for tool in ("ip", "tc"):
        script = tmp_path / tool
        script.write_text("#!/bin/sh\nexec sleep 30\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setattr(tunnel, "IP_TIMEOUT", 0.2)
    monkeypatch.setattr(loader, "TC_TIMEOUT", 0.2)


@pytest.mark.usefixtures("hung_tools")
def test_a_hung_ip_is_a_tunnel_error() -> None:
    with pytest.raises(tunnel.TunnelError, match=r"'ip -d -j link show dev sfc-x' did not answer"):
        tunnel.find("sfc-x")


@pytest.mark.usefixtures("hung_tools")
def test_a_hung_tc_is_a_bpf_error() -> None:
    with pytest.raises(BpfError, match=r"did not answer in 0\.2 s") as caught:
        loader._tc("filter", "show", "dev", "lo", "ingress")
    assert isinstance(caught.value, DataplaneError)
