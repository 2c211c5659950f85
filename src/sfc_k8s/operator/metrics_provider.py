"""``sfc-k8s metrics-provider``: the built-in custom metrics API (``custom.metrics.k8s.io``).

As metrics-server serves ``metrics.k8s.io``, this small HTTPS server is registered with the
API server by an ``APIService`` (``deploy/components/metrics-provider``) and answers the HPA's
``Pods`` metric requests, ``GET /apis/custom.metrics.k8s.io/{v1beta2,v1beta1}/namespaces/NS/
pods/{NAME|*}/METRIC?labelSelector=...``, for the metrics of ``sfc_k8s.api.custom_metrics``:

1. list the namespace's pods matching the selector (or the one named), through the API;
2. ask the agent of every node that runs one of them for its pods' rates
   (``GET /traffic/pods?namespace=NS``, ``sfc_k8s.operator.agent_traffic``), all nodes at once;
3. answer a ``MetricValueList`` of the pods the agents reported, matched by UID (a pod with no
   cross-connected interface has no value: the HPA counts it as missing).

A node's agent is found at ``http://<InternalIP>:<--agent-port>`` (the agent DaemonSet runs
with the host's network), or at the ``host:port`` of the Node's ``sfc-k8s.io/agent-address``
annotation when the agent listens elsewhere. The provider keeps no state: every answer is read
fresh, the agents hold the windows. It serves TLS, as the API server's aggregation layer
requires, with ``--tls-cert-file``/``--tls-private-key-file`` or else a self-signed pair made
at start (with ``openssl``; the APIService then says ``insecureSkipTLSVerify``, as
metrics-server's manifests do). It does not authenticate the aggregation layer's client
certificate (see docs/autoscaling.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import kopf
from aiohttp import web

from sfc_k8s.api import now_rfc3339
from sfc_k8s.api.custom_metrics import (
    CUSTOM_METRICS_GROUP,
    CUSTOM_METRICS_VERSIONS,
    POD_METRICS,
    PodValue,
    group_document,
    metric_value_list,
    not_found,
    resource_list,
)
from sfc_k8s.kube import KubeClient, KubeError, object_path
from sfc_k8s.operator.settings import SettingsError, connection_info

logger = logging.getLogger(__name__)

AGENT_ADDRESS_ANNOTATION = "sfc-k8s.io/agent-address"
DEFAULT_AGENT_PORT = 9469
DEFAULT_PORT = 6443
PREFIX = f"/apis/{CUSTOM_METRICS_GROUP}"
CLIENT_LIFETIME = 60.0  # seconds an API client (and the token it read) is reused


class ProviderError(Exception):
    """The provider cannot serve (its TLS pair cannot be made)."""


class MetricsUnavailableError(Exception):
    """The pods or the agents could not be read; the HPA gets a 503 saying why."""


@dataclass(frozen=True)
class ProviderConfig:
    kubeconfig: str | None = None  # None: the pod's service account
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    agent_port: int = DEFAULT_AGENT_PORT
    agent_timeout: float = 3.0


def agent_url(node: Mapping[str, Any], port: int) -> str | None:
    """Where the node's agent answers (None: the node publishes no address)."""
    annotations = (node.get("metadata") or {}).get("annotations") or {}
    override = annotations.get(AGENT_ADDRESS_ANNOTATION)
    if override:
        return f"http://{override}"
    for address in (node.get("status") or {}).get("addresses") or []:
        if address.get("type") == "InternalIP" and address.get("address"):
            ip = str(address["address"])
            return f"http://[{ip}]:{port}" if ":" in ip else f"http://{ip}:{port}"
    return None


def pod_values(
    metric: str, pods: Iterable[Mapping[str, Any]], reports: Iterable[Mapping[str, Any]]
) -> list[PodValue]:
    """The metric of each pod an agent reported, matched by UID, in the pods' order."""
    field = POD_METRICS[metric]
    by_uid: dict[str, tuple[Mapping[str, Any], str]] = {}
    for report in reports:
        for entry in report.get("pods") or []:
            by_uid[str(entry.get("uid"))] = (entry, str(report.get("timestamp") or now_rfc3339()))
    values = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        found = by_uid.get(str(meta.get("uid")))
        if found is None:
            continue
        entry, timestamp = found
        window = round(float(entry.get("windowSeconds") or 0))
        values.append(
            PodValue(
                str(meta.get("namespace")),
                str(meta.get("name")),
                float(entry[field]),
                timestamp,
                window,
            )
        )
    return values


class MetricsProvider:
    """The aiohttp application and what it reads."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self._http: aiohttp.ClientSession | None = None
        self._client: KubeClient | None = None
        self._client_made = 0.0

    def connection(self) -> kopf.ConnectionInfo:
        """The kubeconfig's credentials or the pod's service account (read again for each new
        client: a service account's token rotates)."""
        return connection_info(self.config.kubeconfig)

    async def _kube(self) -> KubeClient:
        """The API client, made again every ``CLIENT_LIFETIME`` seconds (a service account's
        token rotates; reusing it in between keeps its connections open)."""
        now = time.monotonic()
        if self._client is None or now - self._client_made > CLIENT_LIFETIME:
            if self._client is not None:
                await self._client.close()
            self._client = KubeClient(self.connection(), user_agent="sfc-k8s-metrics-provider")
            self._client_made = now
        return self._client

    def make_app(self) -> web.Application:
        app = web.Application()
        for path in ("/healthz", "/readyz", "/livez"):
            app.router.add_get(path, _ok)
        app.router.add_get(PREFIX, _group)
        app.router.add_get(PREFIX + "/{version}", self._resources)
        app.router.add_get(
            PREFIX + "/{version}/namespaces/{namespace}/pods/{name}/{metric}", self._pod_metric
        )
        app.router.add_route("*", "/{tail:.*}", _missing)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, _: web.Application) -> None:
        if self._http is not None:
            await self._http.close()
        if self._client is not None:
            await self._client.close()

    async def _resources(self, request: web.Request) -> web.Response:
        version = request.match_info["version"]
        if version not in CUSTOM_METRICS_VERSIONS:
            return web.json_response(not_found(f"{PREFIX}/{version}: no such version"), status=404)
        return web.json_response(resource_list(version))

    async def _pod_metric(self, request: web.Request) -> web.Response:
        info = request.match_info
        version, namespace, name, metric = (
            info["version"],
            info["namespace"],
            info["name"],
            info["metric"],
        )
        if version not in CUSTOM_METRICS_VERSIONS or metric not in POD_METRICS:
            known = ", ".join(POD_METRICS)
            message = f"the server could not find the metric {metric} for pods (known: {known})"
            return web.json_response(not_found(message), status=404)
        try:
            pods = await self.pods(namespace, name, request.query.get("labelSelector", ""))
            reports = await self.reports(namespace, pods)
        except MetricsUnavailableError as err:
            status = {**not_found(str(err)), "reason": "ServiceUnavailable", "code": 503}
            return web.json_response(status, status=503)
        values = pod_values(metric, pods, reports)
        if name != "*" and not values:
            message = f"the server could not find the metric {metric} for pods {name}"
            return web.json_response(not_found(message), status=404)
        return web.json_response(metric_value_list(version, metric, values))

    async def pods(self, namespace: str, name: str, selector: str) -> list[Mapping[str, Any]]:
        """The pods asked about, scheduled on a node."""
        params = {"labelSelector": selector} if selector else {}
        if name != "*":
            params["fieldSelector"] = f"metadata.name={name}"
        try:
            async with KubeClient(self.connection(), user_agent="sfc-k8s-metrics-provider") as kube:
                body = await kube.request(
                    "GET", object_path("", "v1", "pods", namespace), params=params
                )
        except (KubeError, SettingsError, OSError) as err:
            raise MetricsUnavailableError(f"cannot list pods in {namespace}: {err}") from err
        return [p for p in body.get("items") or [] if (p.get("spec") or {}).get("nodeName")]

    async def reports(
        self, namespace: str, pods: Sequence[Mapping[str, Any]]
    ) -> list[Mapping[str, Any]]:
        """The agents' reports of the nodes that run ``pods`` (an agent that does not answer
        leaves its pods without values, as a node without metrics would)."""
        nodes = {str(p["spec"]["nodeName"]) for p in pods}
        if not nodes:
            return []
        try:
            kube = await self._kube()
            listed = await kube.list(object_path("", "v1", "nodes", None))
        except (KubeError, SettingsError, OSError) as err:
            raise MetricsUnavailableError(f"cannot list nodes: {err}") from err
        urls = [
            url
            for node in listed
            if (node.get("metadata") or {}).get("name") in nodes
            and (url := agent_url(node, self.config.agent_port)) is not None
        ]
        answers = await asyncio.gather(*(self._ask(url, namespace) for url in urls))
        return [a for a in answers if a is not None]

    async def _ask(self, url: str, namespace: str) -> Mapping[str, Any] | None:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.agent_timeout)
            )
        try:
            async with self._http.get(
                f"{url}/traffic/pods", params={"namespace": namespace}
            ) as resp:
                if resp.status != 200:
                    logger.warning("agent at %s answered %d", url, resp.status)
                    return None
                body: Mapping[str, Any] = await resp.json()
                return body
        except (TimeoutError, aiohttp.ClientError, ValueError) as err:
            logger.warning("agent at %s did not answer: %r", url, err)
            return None


async def _group(_: web.Request) -> web.Response:
    return web.json_response(group_document())


async def _ok(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _missing(request: web.Request) -> web.Response:
    return web.json_response(not_found(f"the server could not find {request.path}"), status=404)


def self_signed(directory: Path, hostnames: Sequence[str]) -> tuple[Path, Path]:
    """A self-signed certificate and key for ``hostnames``, made with ``openssl``."""
    cert, key = directory / "tls.crt", directory / "tls.key"
    names = ",".join(f"DNS:{h}" for h in hostnames)
    argv = [
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365",
        "-subj", f"/CN={hostnames[0]}", "-addext", f"subjectAltName={names}",
        "-keyout", str(key), "-out", str(cert),
    ]  # fmt: skip
    try:
        subprocess.run(argv, check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", "") or err
        raise ProviderError(
            f"cannot make a self-signed certificate with openssl: {detail}"
        ) from err
    return cert, key


def server_context(config: ProviderConfig, scratch: Path) -> ssl.SSLContext:
    if config.tls_cert_file and config.tls_key_file:
        cert, key = Path(config.tls_cert_file), Path(config.tls_key_file)
    else:
        cert, key = self_signed(scratch, ["sfc-k8s-metrics-provider", "localhost"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@contextlib.asynccontextmanager
async def serving(config: ProviderConfig) -> Any:
    """Serve until the block ends; yields the bound port (``config.port`` 0: any free one)."""
    provider = MetricsProvider(config)
    with tempfile.TemporaryDirectory(prefix="sfc-k8s-metrics-") as scratch:
        context = server_context(config, Path(scratch))
        runner = web.AppRunner(provider.make_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.port, ssl_context=context)
        await site.start()
        sockets = getattr(getattr(site, "_server", None), "sockets", None) or []
        port = int(sockets[0].getsockname()[1]) if sockets else config.port
        logger.info("serving %s on https://%s:%d", CUSTOM_METRICS_GROUP, config.host, port)
        try:
            yield port
        finally:
            await runner.cleanup()


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="sfc-k8s metrics-provider",
        description="Serve the custom metrics API (packets/s, bits/s, sessions per pod).",
    )
    parser.add_argument("--kubeconfig", default=env("KUBECONFIG"), help="default: service account")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"HTTPS port ({DEFAULT_PORT})"
    )
    parser.add_argument("--tls-cert-file", help="default: a self-signed pair made at start")
    parser.add_argument("--tls-private-key-file", dest="tls_key_file")
    parser.add_argument(
        "--agent-port",
        type=int,
        default=DEFAULT_AGENT_PORT,
        help=f"the agents' metrics port on their node's InternalIP ({DEFAULT_AGENT_PORT})",
    )
    return parser


def config_from_args(argv: Sequence[str]) -> ProviderConfig:
    parser = _parser()
    args = parser.parse_args(list(argv))
    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        parser.error("--tls-cert-file and --tls-private-key-file go together")
    return ProviderConfig(
        kubeconfig=args.kubeconfig or None,
        host=args.host,
        port=args.port,
        tls_cert_file=args.tls_cert_file,
        tls_key_file=args.tls_key_file,
        agent_port=args.agent_port,
    )


def main(argv: list[str]) -> int:
    """``sfc-k8s metrics-provider ...``: serve until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = config_from_args(argv)
    try:
        connection_info(config.kubeconfig)  # refuse to start without usable credentials
    except SettingsError as err:
        print(f"sfc-k8s metrics-provider: {err}", file=sys.stderr)
        return 1

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with serving(config):
            await stop.wait()

    try:
        asyncio.run(run())
    except (ProviderError, OSError) as err:
        print(f"sfc-k8s metrics-provider: {err}", file=sys.stderr)
        return 1
    return 0
