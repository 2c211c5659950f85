"""The network probes of a local pod's containers: ``httpGet`` and ``tcpSocket``, as the kubelet
runs them, from inside the pod's network namespace.

Called by the pod worker's probe loops (``pod.py``; exec probes run there, through the
container launcher). ``httpGet``: a GET of ``path`` on ``host`` (the pod's IP by default) and
``port`` (a number or the name of one of the container's ports), ``scheme`` HTTP or HTTPS
(certificate not verified, as the kubelet does not), ``httpHeaders`` sent; a status from 200 to
399 is a success, anything else (or no answer within ``timeoutSeconds``) a failure whose detail
reads like the kubelet's event message.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Mapping
from typing import Any

from sfc_k8s.local import netns

MAX_HEADER_BYTES = 64 * 1024


class ProbeError(Exception):
    """The probe could not be run as written (an unknown port name)."""


def resolve_port(port: Any, container: Mapping[str, Any]) -> int:
    """A probe's ``port``: a number, or the name of one of the container's ``ports``."""
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for item in container.get("ports") or []:
        if item.get("name") == port:
            return int(item["containerPort"])
    raise ProbeError(f"port {port!r} is not a port name of container {container.get('name')!r}")


def _request(host: str, path: str, headers: list[Mapping[str, Any]]) -> bytes:
    lines = [f"GET {path or '/'} HTTP/1.1"]
    names = {str(h.get("name", "")).lower() for h in headers}
    if "host" not in names:
        lines.append(f"Host: {host}")
    if "user-agent" not in names:
        lines.append("User-Agent: kube-probe/1.32")
    if "accept" not in names:
        lines.append("Accept: */*")
    lines += [f"{h.get('name')}: {h.get('value', '')}" for h in headers]
    lines += ["Connection: close", "", ""]
    return "\r\n".join(lines).encode()


def _status_line(sock: socket.socket) -> str:
    data = b""
    while b"\r\n" not in data and len(data) < MAX_HEADER_BYTES:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


def _http_get(
    netns_name: str, host: str, port: int, request: bytes, *, timeout: float, tls: bool
) -> str:
    sock = netns.connect_in_netns(netns_name, host, port, timeout=timeout)
    try:
        sock.settimeout(timeout)
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock, server_hostname=host)
        sock.sendall(request)
        return _status_line(sock)
    finally:
        sock.close()


async def http_get(
    netns_name: str, probe: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str
) -> tuple[bool, str]:
    """Run one ``httpGet`` probe; (success, the failure's detail)."""
    spec = probe["httpGet"]
    timeout = float(probe.get("timeoutSeconds", 1))
    host = str(spec.get("host") or pod_ip or "127.0.0.1")
    scheme = str(spec.get("scheme") or "HTTP").upper()
    path = str(spec.get("path") or "/")
    try:
        port = resolve_port(spec.get("port"), container)
    except ProbeError as err:
        return False, str(err)
    url = f"{scheme.lower()}://{host}:{port}{path}"
    request = _request(host, path, list(spec.get("httpHeaders") or []))
    try:
        line = await asyncio.to_thread(
            _http_get, netns_name, host, port, request, timeout=timeout, tls=scheme == "HTTPS"
        )
    except (OSError, netns.NetnsError) as err:
        return False, f'Get "{url}": {err}'
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return False, f'Get "{url}": malformed HTTP response {line[:80]!r}'
    code = int(parts[1])
    if 200 <= code < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {code}"


async def tcp_socket(
    netns_name: str, probe: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str
) -> tuple[bool, str]:
    """Run one ``tcpSocket`` probe: a connection is a success."""
    spec = probe["tcpSocket"]
    timeout = float(probe.get("timeoutSeconds", 1))
    host = str(spec.get("host") or pod_ip or "127.0.0.1")
    try:
        port = resolve_port(spec.get("port"), container)
        sock = await asyncio.to_thread(
            netns.connect_in_netns, netns_name, host, port, timeout=timeout
        )
    except ProbeError as err:
        return False, str(err)
    except (OSError, netns.NetnsError) as err:
        return False, f"dial tcp {host}:{port}: {err}"
    sock.close()
    return True, ""
