"""The shared host-interface name and MAC, as part of the ``sfc_k8s.api`` surface.

The functions live in the leaf module ``sfc_k8s.naming`` (so that the CNI plugin can import them
without this package's CRD models); the controller, the node agent and the local cluster import
them from here.
"""

from __future__ import annotations

from sfc_k8s.naming import HOST_IFNAME_PREFIX, IFNAME_MAX, host_ifname, mac_from_seed

__all__ = ["HOST_IFNAME_PREFIX", "IFNAME_MAX", "host_ifname", "mac_from_seed"]
