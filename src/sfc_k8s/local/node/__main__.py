"""``python -m sfc_k8s.local.node``: run the node runtime for one or more emulated nodes.

Started by ``sfc-k8s local up`` as a background process (logs in the state directory). It
exits on SIGTERM/SIGINT after stopping every pod it runs (no grace: the cluster goes away).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from sfc_k8s.local.kube import KubeClient, KubeError, load_kubeconfig
from sfc_k8s.local.layout import Layout, default_state_dir, node_name
from sfc_k8s.local.node.runtime import HEARTBEAT_SECONDS, NodeRuntime, NodeSpec
from sfc_k8s.local.paths import default_cni_path


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sfc_k8s.local.node", description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, help="default: <state-dir>/kubeconfig")
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--nodes", type=int, default=1, help="number of nodes (node-1..node-N)")
    parser.add_argument(
        "--cni-path", default=None, help="colon-separated plugin folders (default: build/cni, …)"
    )
    parser.add_argument(
        "--serve",
        action="append",
        metavar="NODE",
        help="run only this node of the N (repeatable; default: all), as one kubelet per node",
    )
    parser.add_argument(
        "--node-status-update-frequency",
        type=float,
        default=HEARTBEAT_SECONDS,
        metavar="SECONDS",
        help="how often the Node status and Lease are renewed (the heartbeat)",
    )
    parser.add_argument(
        "--no-pod-network",
        action="store_true",
        help="give pods only a loopback, no eth0 on the cluster network",
    )
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> int:
    layout = Layout(args.state_dir or default_state_dir())
    kubeconfig = args.kubeconfig or layout.kubeconfig
    cni_path = args.cni_path.split(":") if args.cni_path else default_cni_path()
    nodes = [NodeSpec(node_name(i), i) for i in range(1, args.nodes + 1)]
    if args.serve:
        unknown = set(args.serve) - {n.name for n in nodes}
        if unknown:
            logging.error("--serve %s: not one of node-1..node-%d", sorted(unknown), args.nodes)
            return 2
        nodes = [n for n in nodes if n.name in args.serve]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with KubeClient(load_kubeconfig(kubeconfig)) as kube:
        runtime = NodeRuntime(
            kube,
            layout,
            nodes,
            cni_path,
            pod_network=not args.no_pod_network,
            heartbeat=args.node_status_update_frequency,
        )
        try:
            await runtime.start()
        except KubeError as err:
            logging.error("cannot start the node runtime: %s", err)
            await runtime.stop()
            return 1
        logging.info("node runtime serving %s (CNI_PATH %s)", ", ".join(runtime.nodes), cni_path)
        await stop.wait()
        logging.info("stopping: removing every pod of this runtime")
        await runtime.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(_serve(parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    sys.exit(main())
