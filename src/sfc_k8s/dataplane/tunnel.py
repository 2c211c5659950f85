"""The node's tunnel device: one flow-based VXLAN device that carries cross-node flows.

Created (or adopted, when an earlier process made it) by ``Dataplane.ensure_tunnel``, in the
network namespace the caller runs in: ``ip link add NAME type vxlan external gbp dstport PORT``.
"external" (collect_md) makes it flow-based: the eBPF program sets each packet's outer
destination and key (bpf/lib/tunnel.h), so one device serves every node and link. "gbp" adds
the VXLAN Group Policy extension, whose 16-bit id carries the link's cluster-wide id.

The default UDP port clashes with no common CNI's tunnel: not 4789 (IANA VXLAN: Calico,
Antrea, Kube-OVN...), 8472 (Linux's pre-IANA VXLAN port: Flannel, Cilium), 6081 (Geneve),
4790 (VXLAN-GPE, used by NSH service chaining) or 4791 (RoCEv2).
"""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import dataclass

from sfc_k8s.dataplane.errors import DataplaneError, InvalidValue

DEFAULT_NAME = "sfc-vxlan0"
DEFAULT_PORT = 4792
# Ports a default tunnel of some common CNI uses; refused so two tunnels never share a port.
TAKEN_PORTS = {4789: "VXLAN (IANA)", 8472: "Linux VXLAN (Flannel, Cilium)", 6081: "Geneve"}
# What VXLAN over IPv4 adds to an inner L3 packet: outer IPv4 (20), UDP (8), VXLAN (8) and the
# inner Ethernet header (14). NF interfaces on a link that spans nodes are sized underlay MTU
# minus this.
OVERHEAD_IPV4 = 50
# The underlay a new device is sized for when no MTU is given (the common Ethernet MTU).
DEFAULT_UNDERLAY_MTU = 1500

logger = logging.getLogger(__name__)


class TunnelError(DataplaneError):
    """The tunnel device could not be created, or a device of its name is something else."""


@dataclass(frozen=True)
class Device:
    """What the kernel says of a tunnel device."""

    ifname: str
    ifindex: int
    port: int
    mtu: int


def mtu_for(underlay_mtu: int) -> int:
    """The MTU of the tunnel device, and of NF interfaces on links spanning nodes."""
    return underlay_mtu - OVERHEAD_IPV4


def check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise InvalidValue(f"invalid tunnel port {port}: expected 1 to 65535")
    if port in TAKEN_PORTS:
        raise InvalidValue(
            f"invalid tunnel port {port}: {TAKEN_PORTS[port]} uses it; choose another"
            f" (default {DEFAULT_PORT})"
        )


IP_TIMEOUT = 10.0  # seconds an `ip` call may take before the caller gets a TunnelError


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    # A hung `ip` (an overloaded node) must reach callers as a data-plane error, which they
    # report and retry, not as an exception that fails the agent's handler untyped.
    try:
        return subprocess.run(
            ["ip", *args], capture_output=True, text=True, check=False, timeout=IP_TIMEOUT
        )
    except subprocess.TimeoutExpired as err:
        raise TunnelError(f"'ip {' '.join(args)}' did not answer in {IP_TIMEOUT:g} s") from err


def find(ifname: str) -> Device | None:
    """The device ``ifname`` if it is a flow-based VXLAN device with GBP, None if there is no
    such interface; TunnelError if it is something else."""
    done = _ip("-d", "-j", "link", "show", "dev", ifname)
    if done.returncode != 0:
        return None
    (link,) = json.loads(done.stdout)
    info = link.get("linkinfo", {})
    data = info.get("info_data", {})
    if info.get("info_kind") != "vxlan" or not data.get("external") or not data.get("gbp"):
        raise TunnelError(
            f"interface {ifname!r} exists but is not a flow-based VXLAN device with GBP"
            " (type vxlan external gbp): remove it or choose another name"
        )
    return Device(ifname, int(link["ifindex"]), int(data.get("port", 0)), int(link["mtu"]))


def ensure(ifname: str, *, port: int, mtu: int) -> tuple[Device, bool]:
    """The tunnel device, created and up; True when this call created it. An existing one
    must have the port; ``mtu`` is set either way (0: leave an existing device's; a new one
    gets ``mtu_for(DEFAULT_UNDERLAY_MTU)``, as the kernel would give it 1500, which no
    1500-byte underlay carries once encapsulated). An adopted device whose MTU differs (one an
    older agent created at the kernel's 1500) is resized, and the change logged."""
    check_port(port)
    device = find(ifname)
    created = device is None
    if device is None:
        done = _ip("link", "add", ifname, "type", "vxlan", "external", "gbp", "dstport", str(port))
        if done.returncode != 0:
            raise TunnelError(f"failed to create tunnel device {ifname!r}: {done.stderr.strip()}")
    elif device.port != port:
        raise TunnelError(
            f"tunnel device {ifname!r} exists on UDP port {device.port}, not {port}:"
            " remove it (dp tunnel del) to change the port"
        )
    if created and not mtu:
        mtu = mtu_for(DEFAULT_UNDERLAY_MTU)
    settings = ["mtu", str(mtu)] if mtu else []
    done = _ip("link", "set", "dev", ifname, *settings, "up")
    if done.returncode != 0:
        if created:
            delete(ifname)
        raise TunnelError(f"failed to set up tunnel device {ifname!r}: {done.stderr.strip()}")
    adopted_mtu = 0 if created or device is None else device.mtu
    device = find(ifname)
    if device is None:
        raise TunnelError(f"tunnel device {ifname!r} vanished while being set up")
    if adopted_mtu and adopted_mtu != device.mtu:
        logger.info("tunnel device %r: MTU %d -> %d (adopted)", ifname, adopted_mtu, device.mtu)
    return device, created


def delete(ifname: str) -> None:
    """Remove the device; one already gone is fine."""
    if find(ifname) is not None:
        _ip("link", "del", "dev", ifname)
