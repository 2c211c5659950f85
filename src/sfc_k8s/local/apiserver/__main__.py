"""`python -m sfc_k8s.local.apiserver`: run the local API server as a process.

Started by `sfc-k8s local up`; prints the URL and the kubeconfig path once serving, stops on
SIGTERM/SIGINT. With `--database FILE` the objects live in that SQLite file (created if missing)
and a restarted server continues from it; a database it cannot use is one line on stderr and
exit status 1. With `--pki DIR` it serves HTTPS with the cluster's CA from DIR (made if
missing), authenticates every request and enforces RBAC (`--authorization-mode RBAC`, the
default) or allows every authenticated request (`AlwaysAllow`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from sfc_k8s.local.apiserver.hpacontroller import DEFAULT_SYNC_PERIOD
from sfc_k8s.local.apiserver.nodelifecycle import DEFAULT_EVICTION_SECONDS, DEFAULT_GRACE_SECONDS
from sfc_k8s.local.apiserver.persist import SYNCHRONOUS_MODES, DatabaseError
from sfc_k8s.local.apiserver.pki import PKIError
from sfc_k8s.local.apiserver.server import APIServer
from sfc_k8s.local.apiserver.store import DEFAULT_HISTORY


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sfc_k8s.local.apiserver",
        description="Run the local Kubernetes-compatible API server.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="where the kubeconfig is written"
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="kubeconfig path (default STATE_DIR/kubeconfig)",
    )
    parser.add_argument(
        "--pod-logs",
        type=Path,
        default=None,
        help="serve `kubectl logs` from POD_LOGS/<pod uid>/<container>.log",
    )
    parser.add_argument(
        "--node-monitor-grace-period",
        type=float,
        default=DEFAULT_GRACE_SECONDS,
        metavar="SECONDS",
        help="a node silent this long turns Ready=Unknown (default %(default)g)",
    )
    parser.add_argument(
        "--pod-eviction-timeout",
        type=float,
        default=DEFAULT_EVICTION_SECONDS,
        metavar="SECONDS",
        help="pods on an unreachable node are evicted this long after it turned Unknown, "
        "unless a toleration says otherwise (default %(default)g)",
    )
    parser.add_argument(
        "--database",
        type=Path,
        default=None,
        help="keep the objects in this SQLite file (default: in memory only)",
    )
    parser.add_argument(
        "--sync",
        choices=SYNCHRONOUS_MODES,
        default="normal",
        help="normal: a write survives any process crash; full: also a power loss (fsync)",
    )
    parser.add_argument(
        "--history",
        type=int,
        default=DEFAULT_HISTORY,
        help="change events kept per resource for watches to resume from (older: 410 Expired)",
    )
    parser.add_argument(
        "--pki",
        type=Path,
        default=None,
        help="serve HTTPS with the CA, certificates and keys in this directory (made if "
        "missing) and authenticate every request (default: plain HTTP, no authentication)",
    )
    parser.add_argument(
        "--authorization-mode",
        choices=("RBAC", "AlwaysAllow"),
        default="RBAC",
        help="with --pki: enforce RBAC (default) or allow every authenticated request",
    )
    parser.add_argument(
        "--horizontal-pod-autoscaler-sync-period",
        type=float,
        default=DEFAULT_SYNC_PERIOD,
        metavar="SECONDS",
        help="how often the HPA controller syncs every HPA (default %(default)g, as "
        "kube-controller-manager)",
    )
    args = parser.parse_args(argv)
    if args.history < 1:
        parser.error(f"--history: {args.history} is not a positive number of events")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        server = APIServer(
            host=args.host,
            port=args.port,
            state_dir=args.state_dir,
            pod_log_dir=args.pod_logs,
            node_grace=args.node_monitor_grace_period,
            eviction_timeout=args.pod_eviction_timeout,
            database=args.database,
            synchronous=args.sync,
            history_limit=args.history,
            pki=args.pki,
            authorization=args.authorization_mode == "RBAC",
            hpa_sync_period=args.horizontal_pod_autoscaler_sync_period,
        )
    except (DatabaseError, PKIError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1

    def on_ready() -> None:
        lines = [f"serving on {server.url}"]
        if args.kubeconfig or args.state_dir:
            lines.append(f"kubeconfig: {server.write_kubeconfig(args.kubeconfig)}")
        print("\n".join(lines), flush=True)

    def on_signal(signum: int, frame: object) -> None:
        del signum, frame
        server.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    import asyncio

    loop = asyncio.new_event_loop()
    server._loop = loop
    try:
        loop.run_until_complete(server.serve_async(on_ready))
    finally:
        loop.close()
        server.store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
