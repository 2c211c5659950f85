"""Where the local cluster finds the project's files: CNI plugins, CRDs, examples.

The local cluster runs from a source checkout (``make demo``, ``make test``); these helpers find
that checkout from the package's location, and environment variables override each path.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import sfc_k8s

CNI_PATH_ENV = "SFC_K8S_CNI_PATH"


def source_root() -> Path:
    """The checkout holding ``src/sfc_k8s`` (where ``build/``, ``deploy/``, ``examples/`` are)."""
    return Path(sfc_k8s.__file__).resolve().parents[2]


def default_cni_path() -> list[str]:
    """Plugin folders, first match wins: ``$SFC_K8S_CNI_PATH``, else ``build/cni`` (sfc-cni and
    the reference plugins, put there by ``make``), the venv's scripts (``sfc-cni``), and the
    Debian reference plugins."""
    if os.environ.get(CNI_PATH_ENV):
        return [p for p in os.environ[CNI_PATH_ENV].split(":") if p]
    candidates = [
        source_root() / "build" / "cni",
        Path(sys.executable).parent,
        Path("/usr/lib/cni"),
        Path("/opt/cni/bin"),
    ]
    return [str(p) for p in candidates if p.is_dir()]


def crds_dir() -> Path:
    return source_root() / "deploy" / "crds"


def rbac_manifests() -> list[Path]:
    """The operator's namespace, service accounts, ClusterRoles and bindings, as installed on a
    real cluster (``deploy/base``)."""
    base = source_root() / "deploy" / "base"
    return [base / "namespace.yaml", base / "rbac.yaml"]


def examples_dir() -> Path:
    return source_root() / "examples"
