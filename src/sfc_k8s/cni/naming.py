"""``sfc_k8s.api.naming`` for the CNI plugin, without importing the ``sfc_k8s.api`` package.

The host-side veth name and the shared MAC must be computed by exactly the functions the node
agent uses, so the plugin calls ``sfc_k8s.api.naming``. Importing it the normal way first runs
``sfc_k8s/api/__init__.py``, which loads every CRD model (~40 ms on a slow node, more than the
whole ADD budget), so this module loads the one file with the standard source loader (cached
bytecode included) and keeps it private to the plugin. When the API package is already imported
(tests, a long-lived process) the regular module is used.
"""

from __future__ import annotations

import os
import sys

import sfc_k8s

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType

MODULE = "sfc_k8s.api.naming"
_loaded: list[ModuleType] = []


def _module() -> ModuleType:
    if _loaded:
        return _loaded[0]
    module = sys.modules.get(MODULE)
    if module is None and "sfc_k8s.api" in sys.modules:
        import sfc_k8s.api.naming as module
    if module is None:
        try:  # the loader class importlib.machinery re-exports, already in memory
            from _frozen_importlib_external import SourceFileLoader
        except ImportError:  # pragma: no cover - not CPython
            from importlib.machinery import SourceFileLoader
        path = os.path.join(sfc_k8s.__path__[0], "api", "naming.py")
        loader = SourceFileLoader(MODULE, path)
        module = type(sys)(MODULE)
        module.__file__ = path
        module.__loader__ = loader
        module.__package__ = "sfc_k8s.api"
        loader.exec_module(module)
    _loaded.append(module)
    return module


def host_ifname(pod_uid: str, pod_ifname: str) -> str:
    """``sfc_k8s.api.naming.host_ifname``: the host end's name for a pod interface."""
    name: str = _module().host_ifname(pod_uid, pod_ifname)
    return name


def mac_from_seed(seed: str) -> str:
    """``sfc_k8s.api.naming.mac_from_seed``: the MAC every replica of an NF interface shares."""
    mac: str = _module().mac_from_seed(seed)
    return mac
