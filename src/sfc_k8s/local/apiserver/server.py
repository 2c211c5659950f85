"""`APIServer`: the local API server as a thing to start, stop and point kubectl at.

Used by `sfc-k8s local up` (through `python -m sfc_k8s.local.apiserver`), by the `apiserver`
pytest fixture and by anything that needs a Kubernetes API on loopback. `start()` serves from a
background thread with its own event loop; `serve_forever()` serves in the calling thread.
With a `database` the objects are kept in that SQLite file and a new server on it continues
where the last one stopped (or was killed); without one they live in memory only. With a `pki`
directory (as `local up` runs it) the server serves HTTPS with the cluster's CA, authenticates
every request and enforces RBAC (`access.py`); without one it serves plain HTTP and allows
everything, the honest boundary for tests of the API's other behaviours.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import ssl
import threading
from collections.abc import Callable
from importlib import resources as importlib_resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from aiohttp import web

from sfc_k8s.local.apiserver import kubeconfig
from sfc_k8s.local.apiserver.app import Scaffold
from sfc_k8s.local.apiserver.controllers import Controllers
from sfc_k8s.local.apiserver.hpacontroller import DEFAULT_SYNC_PERIOD, HPAController, MetricsSource
from sfc_k8s.local.apiserver.nodelifecycle import DEFAULT_EVICTION_SECONDS, DEFAULT_GRACE_SECONDS
from sfc_k8s.local.apiserver.store import DEFAULT_HISTORY, Store
from sfc_k8s.local.kube import Connection

if TYPE_CHECKING:
    from sfc_k8s.local.apiserver.access import Access
    from sfc_k8s.local.apiserver.pki import PKI

T = TypeVar("T")
logger = logging.getLogger(__name__)
SHUTDOWN_GRACE = 0.1  # seconds a stop grants to requests still in progress
CLOSE_ITERATIONS = 3  # loop turns given to transports aborted by the stop (see _close)
CLUSTER_NAME = kubeconfig.CLUSTER_NAME
ADMIN_USER = "kubernetes-admin"  # the admin client certificate's CN (pki.py)
PRELOADED_CRDS = ("network-attachment-definitions.yaml", "kopf-peerings.yaml")


class APIServerError(RuntimeError):
    """The server could not start or stop."""


def preload_crds(store: Store) -> None:
    """Register the CRDs every local cluster has (NetworkAttachmentDefinition, Kopf peering),
    unless the store already has them (restored from its database)."""
    folder = importlib_resources.files("sfc_k8s.local.apiserver") / "crds"
    crds = ("apiextensions.k8s.io", "customresourcedefinitions")
    for name in PRELOADED_CRDS:
        for doc in yaml.safe_load_all((folder / name).read_text()):
            if doc and store.find(crds, None, doc["metadata"]["name"]) is None:
                store.preload_crd(doc)


def kubeconfig_text(url: str) -> str:
    """A kubeconfig (YAML) for an unauthenticated server at `url`."""
    return kubeconfig.kubeconfig_text(url)


def serving_context(pki: PKI) -> ssl.SSLContext:
    """TLS for the server: its certificate, and client certificates checked against the CA
    when a client offers one (others authenticate with a token, or are anonymous)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.serving_cert), str(pki.serving_key))
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


class APIServer:
    """A Kubernetes-compatible API server on loopback, state in memory or in a database."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        state_dir: Path | None = None,
        *,
        history_limit: int = DEFAULT_HISTORY,
        controllers: bool = True,
        pod_log_dir: Path | None = None,
        node_grace: float = DEFAULT_GRACE_SECONDS,
        eviction_timeout: float = DEFAULT_EVICTION_SECONDS,
        database: Path | None = None,
        synchronous: str = "normal",
        hpa_sync_period: float = DEFAULT_SYNC_PERIOD,
        hpa_metrics: MetricsSource | None = None,
        pki: Path | None = None,
        authorization: bool = True,
    ) -> None:
        """`pod_log_dir`: where `kubectl logs` finds container output, as
        POD_LOG_DIR/<pod uid>/<container>.log (the node runtime's layout). `node_grace` and
        `eviction_timeout`: the node lifecycle controller's delays (see `Controllers`).
        `database`: the SQLite file the objects are kept in (None: memory only), opened now
        (a persist.DatabaseError says why it cannot be); `synchronous`: its "normal" or
        "full" durability (docs/local-cluster.md). `hpa_sync_period`, `hpa_metrics`: the HPA
        controller's period and metrics source (default: the custom metrics API of this
        server; see `hpacontroller.py`). `pki`: the directory of the cluster's certificates
        and keys (made where missing, `pki.ensure_pki`): serve HTTPS, authenticate, and enforce
        RBAC unless `authorization` is False (kube-apiserver's AlwaysAllow)."""
        self.host = host
        self.port = port
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.store = Store(history_limit=history_limit, path=database, synchronous=synchronous)
        preload_crds(self.store)
        self.pki: PKI | None = None
        self.access: Access | None = None
        if pki is not None:  # (imported here: plain-HTTP servers need no cryptography)
            from sfc_k8s.local.apiserver.access import Access
            from sfc_k8s.local.apiserver.pki import ensure_pki, load_service_account_key
            from sfc_k8s.local.apiserver.tokens import TokenIssuer

            self.pki = ensure_pki(pki)
            issuer = TokenIssuer(load_service_account_key(self.pki))
            self.access = Access(self.store, issuer, authorization=authorization)
            self.access.bootstrap()
        self._with_controllers = controllers
        self._hpa = (hpa_sync_period, hpa_metrics)
        self.pod_log_dir = Path(pod_log_dir) if pod_log_dir is not None else None
        self.controllers = (
            Controllers(
                self.store,
                node_grace=node_grace,
                eviction_timeout=eviction_timeout,
                root_ca=self.pki.ca_cert.read_text() if self.pki else None,
            )
            if controllers
            else None
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._scaffold: Scaffold | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.pki is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def loopback_connection(self) -> Connection:
        """How the server's own clients (the HPA controller) reach it: as kube-apiserver's
        loopback client, a random token of a system:masters user, valid while it runs."""
        if self.pki is None or self.access is None:
            return Connection(server=self.url)
        return Connection(
            server=self.url,
            ca_path=str(self.pki.ca_cert),
            token=self.access.loopback_token,
            scheme="Bearer",
        )

    async def _open(self) -> None:
        self._stopping = asyncio.Event()
        access = self.access
        self._scaffold = Scaffold(
            self.store,
            pod_log_dir=self.pod_log_dir,
            middlewares=[access.middleware] if access is not None else [],
            routes=access.routes() if access is not None else [],
        )
        self._runner = web.AppRunner(
            self._scaffold.make_app(),
            access_log=None,
            handle_signals=False,
            # How long a stop lets a request in progress finish (twice: aiohttp waits, cancels
            # the handler, waits again). Streams are ended before; what is left are plain
            # requests (handled in one step) and clients that stopped half-way through a body.
            shutdown_timeout=SHUTDOWN_GRACE,
            handler_cancellation=True,  # a closed watch connection ends its handler
        )
        await self._runner.setup()
        tls = serving_context(self.pki) if self.pki is not None else None
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True, ssl_context=tls)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def _close(self) -> None:
        # End every watch: handlers write their last chunk to clients that read, then drop
        # the connections of those that do not (their handlers wait on a full socket buffer,
        # which aiohttp's shutdown would only cancel after its grace, twice).
        self.store.close_watches()
        scaffold = self._scaffold
        if scaffold is not None:
            deadline = asyncio.get_running_loop().time() + SHUTDOWN_GRACE
            while scaffold.streams and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            scaffold.abort_streams()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        if pending:
            _, stuck = await asyncio.wait(pending, timeout=SHUTDOWN_GRACE)
            for task in stuck:  # never happens unless a task swallows its cancellation
                logger.error("task %r did not end when the server stopped", task.get_name())
        # A connection cancelled in the middle of its TLS handshake (a request proxied to an
        # aggregated API when the stop came) is aborted, and its socket closed, by a callback
        # of the next loop iterations: run them before the loop is closed, or the socket is
        # left to the garbage collector (an "unclosed transport" ResourceWarning).
        for _ in range(CLOSE_ITERATIONS):
            await asyncio.sleep(0)

    async def serve_async(self, ready: Callable[[], None] | None = None) -> None:
        """Serve until `stop()` (or cancellation); `ready` is called once listening."""
        await self._open()
        tasks = []
        if self.controllers is not None:
            tasks.append(asyncio.create_task(self.controllers.run()))
            period, metrics = self._hpa
            hpa = HPAController(self.loopback_connection(), metrics=metrics, sync_period=period)
            tasks.append(asyncio.create_task(hpa.run()))
        try:
            if ready is not None:
                ready()
            assert self._stopping is not None
            await self._stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._close()

    def start(self, timeout: float = 10.0) -> None:
        """Start serving from a background thread; returns once the port accepts requests."""
        if self._thread is not None:
            raise APIServerError("the API server is already started")
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.serve_async(started.set))
            except BaseException as err:
                failure.append(err)
                started.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="sfc-k8s-apiserver", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise APIServerError(f"the API server did not start within {timeout} s")
        if failure:
            self._thread = None
            raise APIServerError(
                f"failed to serve on {self.host}:{self.port}: {failure[0]}"
            ) from failure[0]

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and end every watch."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if self._stopping is not None:
            loop.call_soon_threadsafe(self._stopping.set)
        thread.join(timeout)
        self._thread = None
        if thread.is_alive():
            raise APIServerError(f"the API server did not stop within {timeout} s")

    def serve_forever(self) -> None:
        """Serve in the calling thread until `stop()` is called from another thread or a
        KeyboardInterrupt."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self.serve_async())
        finally:
            loop.close()

    def request_stop(self) -> None:
        """Ask a `serve_forever()` loop to end (safe from signal handlers and other threads)."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)

    def call(self, func: Callable[..., T], *args: Any, timeout: float = 10.0) -> T:
        """Run `func(*args)` on the server's loop (the store is not thread-safe)."""
        if self._loop is None or self._thread is None:
            return func(*args)

        async def invoke() -> T:
            return func(*args)

        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
            invoke(), self._loop
        )
        return future.result(timeout)

    def write_kubeconfig(self, path: Path | None = None) -> Path:
        """Write a kubeconfig for this server (default: STATE_DIR/kubeconfig): the admin's with
        the CA and a client certificate when serving HTTPS, no credentials otherwise."""
        if path is None:
            if self.state_dir is None:
                raise APIServerError("write_kubeconfig() needs a path when there is no state_dir")
            path = self.state_dir / "kubeconfig"
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.pki is None:
            path.write_text(kubeconfig_text(self.url))
        else:  # the admin's client certificate (system:masters), as kind's kubeconfig has
            text = kubeconfig.kubeconfig_text(
                self.url,
                ca=self.pki.ca_cert,
                client=(self.pki.admin_cert, self.pki.admin_key),
                user=ADMIN_USER,
            )
            path.touch(mode=0o600)
            path.write_text(text)
        return path

    def __enter__(self) -> APIServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
