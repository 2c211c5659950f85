"""What a local container runs when it names the project's own image.

The local cluster ignores images: a container runs its ``command`` and ``args`` on this machine.
The operator's manifests (``deploy/``) name the project's image and give only ``args``, relying
on its ``ENTRYPOINT ["sfc-k8s"]`` (``deploy/Dockerfile``), and the agent's ``install-cni`` init
container copies the image's ``/opt/sfc-k8s/cni`` (the ``sfc-cni`` shim and the IPAM plugins).
For a container of that image (any registry and tag, e.g. ``sfc-k8s:0.1.0`` or
``ghcr.io/x/sfc-k8s@sha256:...``) the pod worker (``pod.py``) therefore runs the venv's
``sfc-k8s`` as the entrypoint, and ``launch.py`` mounts a stand-in of the image's
``/opt/sfc-k8s`` made from this checkout's build (``make``'s ``build/shim/sfc-cni``) and the
node's reference plugins. Containers of any other image need an explicit ``command``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sfc_k8s.local.layout import Layout
from sfc_k8s.local.node.launch import Mount
from sfc_k8s.local.paths import default_cni_path, source_root

PROJECT_IMAGE = "sfc-k8s"
ENTRYPOINT = ("sfc-k8s",)  # deploy/Dockerfile's ENTRYPOINT
DEFAULT_CMD = ("controller",)  # and its CMD
IMAGE_DATA_DIR = "/opt/sfc-k8s"  # the image's own files (install-cni's source: cni/)
IPAM_PLUGINS = ("host-local", "static")


def image_name(image: str) -> str:
    """``ghcr.io/x/sfc-k8s:0.1.0`` -> ``sfc-k8s`` (the last path part, no tag or digest)."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def is_project_image(image: str) -> bool:
    return image_name(image) == PROJECT_IMAGE


def venv_command(name: str) -> str:
    """The console script ``name`` of the environment running the node runtime."""
    return str(Path(sys.executable).parent / name)


def container_argv(spec: Mapping[str, Any]) -> list[str]:
    """The process a container runs, as a container runtime builds it from the image's
    entrypoint and the container's ``command``/``args``; the project's ``sfc-k8s`` is this
    environment's. Empty when nothing says what to run."""
    command = [str(x) for x in spec.get("command") or []]
    args = [str(x) for x in spec.get("args") or []]
    project = is_project_image(str(spec.get("image") or ""))
    if not command and project:
        command = list(ENTRYPOINT)
        args = args or list(DEFAULT_CMD)
    argv = command + args
    if project and argv and argv[0] in ENTRYPOINT:
        argv[0] = venv_command(argv[0])
    return argv


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    tmp.replace(link)


def image_data(layout: Layout) -> Path:
    """The stand-in of the image's ``/opt/sfc-k8s`` in the state directory (made if missing):
    ``cni/sfc-cni`` is the checkout's shim, ``cni/host-local`` and ``cni/static`` the first
    found in the runtime's plugin folders."""
    root = layout.state_dir / "image" / IMAGE_DATA_DIR.lstrip("/")
    cni = root / "cni"
    cni.mkdir(parents=True, exist_ok=True)
    _link(source_root() / "build" / "shim" / "sfc-cni", cni / "sfc-cni")
    for name in IPAM_PLUGINS:
        found = next(
            (Path(d) / name for d in default_cni_path() if os.access(Path(d) / name, os.X_OK)),
            None,
        )
        if found is not None:
            _link(found, cni / name)
    return root


def image_mounts(layout: Layout, image: str) -> list[Mount]:
    """The bind mounts that stand in for the image's files (none for other images)."""
    if not is_project_image(image):
        return []
    return [Mount(str(image_data(layout)), IMAGE_DATA_DIR, read_only=True)]
