"""Settings of the operator processes (controller, node agent) from flags and environment.

``sfc-k8s controller`` parses its command line with ``controller_config_from_args``; every flag
has an environment variable (``SFC_K8S_*``) so a Deployment can configure it without arguments.
``configure_logging`` sets up structured logs (JSON by default, one object per line, extra fields
included) or plain text for people; the node agent may use it too. ``connection_info`` resolves
credentials: an explicit kubeconfig, ``$KUBECONFIG``, or the in-cluster service account.
"""

from __future__ import annotations

import argparse
import enum
import logging
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import kopf

DEFAULT_PEERING = "sfc-k8s-controller"
MAX_PRIORITY = 1 << 30


class LogFormat(enum.StrEnum):
    JSON = "json"  # one JSON object per line, for log collectors
    PLAIN = "plain"  # message only, for people
    FULL = "full"  # time, level, logger and message


def configure_logging(
    log_format: LogFormat | str = LogFormat.JSON, *, verbose: bool = False, debug: bool = False
) -> None:
    """Route Kopf's and our loggers to stderr in ``log_format`` (``extra={...}`` fields kept)."""
    fmt = LogFormat(log_format)
    kopf.configure(
        debug=debug,
        verbose=verbose,
        log_format={
            LogFormat.JSON: kopf.LogFormat.JSON,
            LogFormat.PLAIN: kopf.LogFormat.PLAIN,
            LogFormat.FULL: kopf.LogFormat.FULL,
        }[fmt],
    )
    if not (verbose or debug):
        # Kopf logs "Handler ... succeeded." per object event: thousands per scaling burst.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)


class SettingsError(Exception):
    """The operator cannot start with the given settings (the message says which one)."""


def connection_info(kubeconfig: str | os.PathLike[str] | None) -> kopf.ConnectionInfo:
    """Credentials for the API server: ``kubeconfig`` if given, else the pod's service account.

    Raises ``SettingsError`` when neither is usable.
    """
    if kubeconfig:
        from sfc_k8s.operator.kube import KubeconfigError, connection_from_kubeconfig

        try:
            return connection_from_kubeconfig(kubeconfig)
        except KubeconfigError as err:
            raise SettingsError(str(err)) from err
    info = kopf.login_with_service_account(settings=kopf.OperatorSettings())
    if info is None:
        raise SettingsError(
            "no credentials: pass --kubeconfig (or set KUBECONFIG), or run in a pod with a "
            "service account"
        )
    return info


@dataclass(frozen=True)
class ControllerConfig:
    """Everything ``sfc-k8s controller`` can be told; defaults suit a cluster deployment."""

    kubeconfig: str | None = None
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    peering: str | None = DEFAULT_PEERING  # None: standalone, no peering
    priority: int = 0  # 0: pick a random one at start (replicas must differ)
    peering_lifetime: int = 15  # seconds a silent replica is considered alive
    require_programmed: bool = True  # Ready needs the node agents' reports
    retry_delay: float = 0.5  # first retry after an API failure, doubled up to max_retry_delay
    max_retry_delay: float = 30.0
    liveness: str | None = None  # e.g. http://0.0.0.0:8080/healthz
    log_format: LogFormat = LogFormat.JSON
    verbose: bool = False
    debug: bool = False

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    def effective_priority(self) -> int:
        """The peering priority: the configured one, else random so that two replicas differ."""
        return self.priority or (secrets.randbelow(MAX_PRIORITY - 1) + 1)


def _env_bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def controller_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="sfc-k8s controller",
        description="Run the ServiceFunctionChain controller: chains -> CrossConnections + status.",
    )
    parser.add_argument(
        "--kubeconfig",
        default=env.get("SFC_K8S_KUBECONFIG") or env.get("KUBECONFIG"),
        help="kubeconfig file (env SFC_K8S_KUBECONFIG or KUBECONFIG; default: service account)",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        default=[n for n in env.get("SFC_K8S_NAMESPACES", "").split(",") if n],
        help="watch only this namespace (repeatable; env SFC_K8S_NAMESPACES, comma-separated)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="the default")
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument(
        "--peering",
        default=env.get("SFC_K8S_PEERING", DEFAULT_PEERING),
        help="Kopf peering object shared by the replicas (env SFC_K8S_PEERING; "
        f"default {DEFAULT_PEERING})",
    )
    peering.add_argument(
        "--standalone",
        action="store_true",
        default=_env_bool(env.get("SFC_K8S_STANDALONE"), False),
        help="run without peering (a single replica only; env SFC_K8S_STANDALONE)",
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=int(env.get("SFC_K8S_PRIORITY", "0")),
        help="peering priority; the highest live replica acts (env SFC_K8S_PRIORITY; 0: random)",
    )
    parser.add_argument(
        "--peering-lifetime",
        type=int,
        default=int(env.get("SFC_K8S_PEERING_LIFETIME", "15")),
        metavar="SECONDS",
        help="how long a silent replica keeps the lead (env SFC_K8S_PEERING_LIFETIME; 15)",
    )
    parser.add_argument(
        "--no-require-programmed",
        dest="require_programmed",
        action="store_false",
        default=_env_bool(env.get("SFC_K8S_REQUIRE_PROGRAMMED"), True),
        help="report chains Ready without waiting for node agents (env "
        "SFC_K8S_REQUIRE_PROGRAMMED=false)",
    )
    parser.add_argument(
        "--liveness",
        default=env.get("SFC_K8S_LIVENESS"),
        help="serve Kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz (env SFC_K8S_LIVENESS)",
    )
    parser.add_argument(
        "--log-format",
        choices=[f.value for f in LogFormat],
        default=env.get("SFC_K8S_LOG_FORMAT", LogFormat.JSON.value),
        help="json (default), plain or full (env SFC_K8S_LOG_FORMAT)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--debug", action="store_true")
    return parser


def controller_config_from_args(
    argv: Sequence[str], environ: Mapping[str, str] | None = None
) -> ControllerConfig:
    """Parse ``sfc-k8s controller`` arguments (without the subcommand name)."""
    parser = controller_parser(environ)
    args = parser.parse_args(list(argv))
    if args.kubeconfig and not Path(args.kubeconfig).is_file():
        parser.error(f"--kubeconfig {args.kubeconfig!r}: no such file")
    if args.peering_lifetime < 1:
        parser.error("--peering-lifetime must be at least 1 second")
    if args.priority < 0:
        parser.error("--priority must be positive (0 picks a random one)")
    return ControllerConfig(
        kubeconfig=args.kubeconfig or None,
        namespaces=() if args.all_namespaces else tuple(dict.fromkeys(args.namespaces)),
        peering=None if args.standalone else args.peering,
        priority=args.priority,
        peering_lifetime=args.peering_lifetime,
        require_programmed=args.require_programmed,
        liveness=args.liveness or None,
        log_format=LogFormat(args.log_format),
        verbose=args.verbose,
        debug=args.debug,
    )


__all__ = [
    "DEFAULT_PEERING",
    "ControllerConfig",
    "LogFormat",
    "SettingsError",
    "configure_logging",
    "connection_info",
    "controller_config_from_args",
    "controller_parser",
]
