"""Host veth names and shared MACs: deterministic, valid, distinct."""

from __future__ import annotations

import re

from sfc_k8s.api.naming import host_ifname, mac_from_seed


def test_host_ifname_is_deterministic_and_fits_ifnamsiz() -> None:
    name = host_ifname("6f1c2d3e-0000-4000-8000-000000000001", "eth1")
    assert name == host_ifname("6f1c2d3e-0000-4000-8000-000000000001", "eth1")
    assert len(name) == 15
    assert re.fullmatch(r"sfc[0-9a-f]{12}", name)


def test_host_ifname_differs_per_pod_and_interface() -> None:
    names = {host_ifname(f"uid-{i}", ifname) for i in range(2000) for ifname in ("eth1", "eth2")}
    assert len(names) == 4000


def test_mac_from_seed_is_shared_unicast_and_local() -> None:
    mac = mac_from_seed("firewall/eth1")
    assert mac == mac_from_seed("firewall/eth1")
    assert mac != mac_from_seed("firewall/eth2")
    first = int(mac.split(":")[0], 16)
    assert first & 0x01 == 0  # unicast
    assert first & 0x02 == 0x02  # locally administered
