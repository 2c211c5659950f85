"""``sfc_k8s.kube.connector``: a TLS request cancelled half-way leaves no socket behind once its
session is closed, even when the server never answers the TLS shutdown (the API server's
aggregator proxying to a metrics API when it is stopped did, as an "unclosed transport"
ResourceWarning in a later test)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from sfc_k8s.kube import connector
from sfc_k8s.operator.metrics_provider import self_signed


@pytest.fixture
def silent_tls_server(tmp_path: Path) -> Iterator[int]:
    """A TLS server that reads a request and then never answers, not even the TLS shutdown."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed(tmp_path, ["localhost"]))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with contextlib.suppress(OSError):
                    tls = context.wrap_socket(conn, server_side=True)
                    tls.recv(100)
                    held.append(tls)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    listener.close()
    for conn in held:
        conn.close()


def test_a_cancelled_tls_request_leaves_no_socket_once_closed(silent_tls_server: int) -> None:
    client_tls = ssl.create_default_context()
    client_tls.check_hostname = False
    client_tls.verify_mode = ssl.CERT_NONE

    async def cancelled_request() -> None:
        session = aiohttp.ClientSession(connector=connector())
        url = f"https://127.0.0.1:{silent_tls_server}/"

        async def request() -> None:
            async with session.get(url, ssl=client_tls) as answer:
                await answer.read()

        task = asyncio.create_task(request())
        await asyncio.sleep(0.3)  # connected, request sent, no answer
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await session.close()
        for _ in range(3):  # as the API server's stop does before closing its loop
            await asyncio.sleep(0)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(cancelled_request())
    finally:
        loop.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == [], [str(w.message) for w in leaks]
