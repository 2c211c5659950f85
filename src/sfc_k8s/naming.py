"""Deterministic names and addresses shared by the CNI plugin and the node agent.

The CNI plugin names the host end of each data-plane veth, and the node agent must find that
interface again from the pod object alone (pod UID + pod interface name), without the plugin
writing anything to the API. Both call ``host_ifname``; changing it is a data-plane
compatibility break.

A leaf module (it imports nothing of ours but ``sfc_k8s.coldstart``, checked by import-linter):
``sfc_k8s.api`` re-exports it as ``sfc_k8s.api.naming`` for the agent and the controller, and
``sfc-cni`` imports it directly, so the plugin's cold start does not pay for the ``sfc_k8s.api``
package and its CRD models (~40 ms, see docs/cni.md).
"""

from __future__ import annotations

from sfc_k8s.coldstart import sha256

HOST_IFNAME_PREFIX = "sfc"
IFNAME_MAX = 15  # longest Linux interface name: the kernel's IFNAMSIZ (16) less the NUL


def host_ifname(pod_uid: str, pod_ifname: str) -> str:
    """Host-side veth name for interface ``pod_ifname`` of the pod with UID ``pod_uid``.

    ``sfc`` + 12 hex digits of SHA-256 over both inputs: 15 characters, and 48 bits of hash make
    a collision between two interfaces on one node vanishingly unlikely (about 1e-7 at 10,000).
    """
    digest: str = sha256(f"{pod_uid}/{pod_ifname}".encode()).hexdigest()
    return HOST_IFNAME_PREFIX + digest[: IFNAME_MAX - len(HOST_IFNAME_PREFIX)]


def mac_from_seed(seed: str) -> str:
    """A locally administered, unicast MAC derived from ``seed``.

    Every replica of one NF interface uses the same seed, so neighbours see one logical device
    whichever replica a flow lands on.
    """
    octets = bytearray(sha256(seed.encode()).digest()[:6])
    octets[0] = (octets[0] & 0xFC) | 0x02  # clear multicast bit, set locally administered bit
    return ":".join(f"{b:02x}" for b in octets)


def is_host_ifname(name: str) -> bool:
    """Whether ``name`` has the shape of a ``host_ifname`` (the node agent attaches the program
    to every such interface as it appears)."""
    digits = name[len(HOST_IFNAME_PREFIX) :]
    return (
        len(name) == IFNAME_MAX
        and name.startswith(HOST_IFNAME_PREFIX)
        and all(c in "0123456789abcdef" for c in digits)
    )
