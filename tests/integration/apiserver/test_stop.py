"""Stopping the local API server while clients still hold connections.

Covers: `APIServer.stop()` returns within its timeout (no APIServerError) and ends every
connection while these are open: watches whose clients read, watches whose clients never read
(socket buffers full), a `kubectl get -w` (which then exits by itself), `kubectl logs -f`
style streams, idle keep-alive connections, and a request whose body never arrives; the port
then refuses connections, and a second stop() is a no-op.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sfc_k8s.local.apiserver import APIServer

KUBECTL = "/usr/bin/kubectl"


def _open(server: APIServer, request: bytes, *, small_buffer: bool = False) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if small_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((server.host, server.port))
    sock.sendall(request)
    return sock


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()


def _read_until_closed(sock: socket.socket) -> None:
    """Read what the server still sends until it closes the connection (EOF or reset)."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[APIServer]:
    server = APIServer(state_dir=tmp_path, pod_log_dir=tmp_path / "pods")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_stop_ends_watches_streams_and_keep_alive_connections(
    server: APIServer, tmp_path: Path
) -> None:
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    configmaps = server.store.resource("", "v1", "configmaps")
    pods = server.store.resource("", "v1", "pods")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }
    uid = server.call(server.store.create, pods, "default", pod)["metadata"]["uid"]
    (tmp_path / "pods" / uid).mkdir(parents=True)
    (tmp_path / "pods" / uid / "c.log").write_text("hello\n")
    watch = "/api/v1/namespaces/default/configmaps?watch=true"
    sockets = [_open(server, _get(watch)) for _ in range(3)]
    sockets += [_open(server, _get(watch), small_buffer=True) for _ in range(3)]
    sockets.append(_open(server, _get("/api/v1/namespaces/default/pods/p/log?follow=true")))
    idle = [_open(server, _get("/version")) for _ in range(3)]
    for sock in idle:
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    body_missing = (
        b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    )
    sockets += [*idle, _open(server, body_missing)]
    kubectl = subprocess.Popen(
        [KUBECTL, "--kubeconfig", str(kubeconfig), "get", "configmaps", "-w"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while server.call(server.store.watcher_count, configmaps.key) < 7:
            assert time.monotonic() < deadline, "the watches did not open"
            time.sleep(0.05)
        # Enough events to fill the buffers of the clients that do not read.
        for index in range(60):
            body = {"metadata": {"name": f"c{index}"}, "data": {"x": "y" * 20000}}
            server.call(server.store.create, configmaps, "default", body)
        server.stop(timeout=5.0)  # raises APIServerError if it takes longer
        assert kubectl.wait(timeout=20) is not None  # its watch ended with the server
        for sock in sockets:
            _read_until_closed(sock)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((server.host, server.port), timeout=5).close()
        server.stop()
    finally:
        if kubectl.poll() is None:
            kubectl.kill()
        kubectl.wait()
        for sock in sockets:
            sock.close()
