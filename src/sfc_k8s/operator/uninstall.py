"""``sfc-k8s uninstall``: remove sfc-k8s from a cluster in the order that leaves nothing stuck.

Run by a person with cluster-admin credentials (``sfc_k8s.cli`` dispatches here). The order
(docs/install.md, "Uninstall"):

1. delete every ServiceFunctionChain, then every CrossConnection: the node agents, still
   running, release their links (and pins) and remove their finalizers;
2. wait for the CrossConnections to go; a finalizer of an agent that is gone (its Node object
   missing or not Ready) is removed at once, any left after ``--timeout`` is removed with a
   warning naming the node (its pins stay there: ``sfc-k8s dp reset`` on that node);
3. delete the custom metrics APIServices if they point to our metrics provider, the controller,
   the agents and the provider (their workloads), our ClusterKopfPeering object, the CRDs, the
   cluster roles and bindings, the PriorityClass, then the namespace with what is left in it
   (service accounts, Services, ConfigMap, PDB).

Kopf's peering CRDs (``kopf.dev``) may be shared with other Kopf operators: they stay unless
``--kopf-peering-crds`` asks for them. Multus and the NetworkAttachmentDefinitions are never
touched. ``--dry-run`` reads the cluster and says what it would do, writing nothing. Every step
is idempotent: an object already gone is reported as such, so a second run is harmless.
The node-wide eBPF program and maps stay pinned on each node (the agent never unloads them, so
that its restarts never cut traffic): ``sfc-k8s dp reset`` there removes them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sfc_k8s.api import GROUP, VERSION, XC_PLURAL
from sfc_k8s.api.conditions import is_ready
from sfc_k8s.api.nodes import AGENT_FINALIZER_PREFIX, agent_finalizer
from sfc_k8s.operator.kube import ApiError, KubeClient
from sfc_k8s.operator.settings import SettingsError, connection_info

NAMESPACE = "sfc-system"
SFC_PLURAL = "servicefunctionchains"
OUR_CRDS = (f"{SFC_PLURAL}.{GROUP}", f"{XC_PLURAL}.{GROUP}")
KOPF_CRDS = ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev")
RBAC = "/apis/rbac.authorization.k8s.io/v1"
# Deleted after the CrossConnections are gone, in this order (the namespace last: it takes the
# service accounts, the Service, the ConfigMap and the PDB with it).
WORKLOADS = (
    f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/sfc-k8s-controller",
    f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets/sfc-k8s-agent",
    f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/sfc-k8s-metrics-provider",
)
# The metrics provider's registration (components/metrics-provider), deleted only when it
# points to our Service: another adapter may own custom.metrics.k8s.io.
PROVIDER_SERVICE = {"namespace": NAMESPACE, "name": "sfc-k8s-metrics-provider"}
APISERVICES = tuple(
    f"/apis/apiregistration.k8s.io/v1/apiservices/{version}.custom.metrics.k8s.io"
    for version in ("v1beta2", "v1beta1")
)
CLUSTER_OBJECTS = (
    "/apis/kopf.dev/v1/clusterkopfpeerings/sfc-k8s-controller",
    *(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}" for crd in OUR_CRDS),
    f"{RBAC}/clusterrolebindings/sfc-k8s-controller",
    f"{RBAC}/clusterrolebindings/sfc-k8s-agent",
    f"{RBAC}/clusterroles/sfc-k8s-controller",
    f"{RBAC}/clusterroles/sfc-k8s-agent",
    "/apis/scheduling.k8s.io/v1/priorityclasses/sfc-k8s-controller",
    f"{RBAC}/clusterrolebindings/sfc-k8s-metrics-provider",
    f"{RBAC}/clusterrolebindings/sfc-k8s-hpa-custom-metrics",
    f"{RBAC}/clusterroles/sfc-k8s-metrics-provider",
    f"{RBAC}/clusterroles/sfc-k8s-custom-metrics-reader",
)
NAMESPACE_PATH = f"/api/v1/namespaces/{NAMESPACE}"
POLL = 0.5


@dataclass(frozen=True)
class Options:
    kubeconfig: str | None = None
    dry_run: bool = False
    timeout: float = 60.0  # how long agents get to release their CrossConnections
    kopf_peering_crds: bool = False


def stale_finalizers(
    finalizers: Iterable[str], ready_nodes: Iterable[str], *, timed_out: bool
) -> list[str]:
    """The agent finalizers to remove from a CrossConnection being deleted (pure).

    An agent finalizer whose node is not among ``ready_nodes`` belongs to an agent that is gone
    and will never remove it; once ``timed_out``, every agent finalizer goes. Other finalizers
    (not ours) are never returned.
    """
    live = {agent_finalizer(node) for node in ready_nodes}
    return [
        f
        for f in finalizers
        if f.startswith(AGENT_FINALIZER_PREFIX) and (timed_out or f not in live)
    ]


def _ready_nodes(nodes: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(node["metadata"]["name"]) for node in nodes if is_ready(node)]


def _xc_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{XC_PLURAL}/{name}"


class Uninstaller:
    """The steps, over one API client; ``say`` prints a line of the report."""

    def __init__(self, client: KubeClient, options: Options, say: Callable[[str], None]) -> None:
        self.client = client
        self.options = options
        self.say = say

    async def _list(self, path: str) -> list[dict[str, Any]] | None:
        """The items of ``path``; None when the resource is not served (its CRD is gone)."""
        try:
            return await self.client.list(path)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    async def delete(self, path: str) -> None:
        """Delete one object (dry run: look it up); one line of report either way."""
        kind, name = path.rsplit("/", 2)[-2:]
        try:
            if self.options.dry_run:
                await self.client.get(path)
            else:
                await self.client.delete(path)
        except ApiError as err:
            if err.status != 404:
                raise
            self.say(f"{kind}/{name}: already gone")
            return
        self.say(f"{kind}/{name}: {'would delete' if self.options.dry_run else 'deleted'}")

    async def delete_if_ours(self, path: str) -> None:
        """Delete an APIService only if it sends its API to our provider's Service."""
        name = path.rsplit("/", 1)[-1]
        try:
            found = await self.client.get(path)
        except ApiError as err:
            if err.status != 404:
                raise
            self.say(f"apiservices/{name}: already gone")
            return
        service = (found.get("spec") or {}).get("service") or {}
        if {k: service.get(k) for k in PROVIDER_SERVICE} != PROVIDER_SERVICE:
            self.say(f"apiservices/{name}: served by another provider, left")
            return
        await self.delete(path)

    async def delete_all(self, plural: str) -> None:
        items = await self._list(f"/apis/{GROUP}/{VERSION}/{plural}")
        if items is None:
            self.say(f"{plural}: not served (CRD already gone)")
            return
        self.say(f"{plural}: {len(items)} found")
        for item in items:
            md = item["metadata"]
            path = f"/apis/{GROUP}/{VERSION}/namespaces/{md['namespace']}/{plural}/{md['name']}"
            if not md.get("deletionTimestamp"):
                await self.delete(path)

    async def release_cross_connections(self) -> list[str]:
        """Wait for the CrossConnections to go, removing finalizers of gone agents; returns
        the nodes whose agent finalizers had to be removed (their links may stay pinned)."""
        deadline = time.monotonic() + self.options.timeout
        forced: set[str] = set()
        while items := await self._list(f"/apis/{GROUP}/{VERSION}/{XC_PLURAL}"):
            if self.options.dry_run:
                self.say(f"would wait for {len(items)} CrossConnection(s) to be released")
                break
            timed_out = time.monotonic() >= deadline
            ready = _ready_nodes(await self.client.list("/api/v1/nodes"))
            stripped: set[str] = set()
            for item in items:
                stripped |= await self._strip(item, ready, timed_out=timed_out)
            forced |= stripped
            if timed_out and not stripped:  # what holds them now is not ours to remove
                names = ", ".join(
                    f"{i['metadata']['namespace']}/{i['metadata']['name']}" for i in items
                )
                self.say(f"CrossConnection(s) held by finalizers of others, left: {names}")
                break
            await asyncio.sleep(POLL)
        return sorted(forced)

    async def _strip(
        self, item: Mapping[str, Any], ready: list[str], *, timed_out: bool
    ) -> set[str]:
        md = item["metadata"]
        finalizers = list(md.get("finalizers") or [])
        stale = stale_finalizers(finalizers, ready, timed_out=timed_out)
        if not stale or not md.get("deletionTimestamp"):
            return set()
        keep = [f for f in finalizers if f not in stale]
        patch = {"metadata": {"finalizers": keep, "resourceVersion": md["resourceVersion"]}}
        try:
            await self.client.merge_patch(_xc_path(md["namespace"], md["name"]), patch)
        except ApiError as err:
            if err.status in (404, 409):  # gone, or changed meanwhile: seen on the next poll
                return set()
            raise
        why = "timed out" if timed_out else "agent gone"
        self.say(f"{md['namespace']}/{md['name']}: removed {', '.join(stale)} ({why})")
        return {f.removeprefix(AGENT_FINALIZER_PREFIX) for f in stale}

    async def run(self) -> list[str]:
        """Every step in order; returns the nodes that may still hold links (see --timeout)."""
        await self.delete_all(SFC_PLURAL)  # their CrossConnections follow (owner references)
        await self.delete_all(XC_PLURAL)  # and any left without a chain
        forced = await self.release_cross_connections()
        for path in APISERVICES:  # first: the API server stops sending requests to it
            await self.delete_if_ours(path)
        for path in WORKLOADS:
            await self.delete(path)
        for path in CLUSTER_OBJECTS:
            await self.delete(path)
        if self.options.kopf_peering_crds:
            for crd in KOPF_CRDS:
                await self.delete(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}")
        await self.delete(NAMESPACE_PATH)
        return forced


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sfc-k8s uninstall",
        description="Remove sfc-k8s from the cluster (chains, CrossConnections, operator, CRDs,"
        " RBAC, namespace sfc-system); Multus and shared Kopf CRDs stay.",
    )
    parser.add_argument(
        "--kubeconfig", help="kubeconfig file (default: KUBECONFIG, ~/.kube/config, in-cluster)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="say what would be done, write nothing"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long running agents get to release their CrossConnections (60)",
    )
    parser.add_argument(
        "--kopf-peering-crds",
        action="store_true",
        help="also delete Kopf's peering CRDs (only if no other Kopf operator uses them)",
    )
    return parser


def _kubeconfig(given: str | None) -> str | None:
    """--kubeconfig, else KUBECONFIG's first file, else ~/.kube/config if present (as kubectl)."""
    if given:
        return given
    listed = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        return listed[0]
    default = os.path.expanduser("~/.kube/config")
    return default if os.path.exists(default) else None


async def _uninstall(options: Options, say: Callable[[str], None]) -> list[str]:
    info = connection_info(_kubeconfig(options.kubeconfig))
    async with KubeClient(info, user_agent="sfc-k8s-uninstall") as client:
        return await Uninstaller(client, options, say).run()


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.timeout < 0:
        _parser().error(f"--timeout must be 0 or more seconds, not {args.timeout}")
    options = Options(
        kubeconfig=args.kubeconfig,
        dry_run=args.dry_run,
        timeout=args.timeout,
        kopf_peering_crds=args.kopf_peering_crds,
    )
    try:
        forced = asyncio.run(_uninstall(options, print))
    except (ApiError, SettingsError) as err:
        print(f"sfc-k8s uninstall: {err}", file=sys.stderr)
        return 1
    if forced:
        print(
            "links may remain pinned on node(s) whose agent did not release them in time: "
            f"{', '.join(forced)}; run 'sfc-k8s dp reset' there"
        )
    print("dry run: nothing changed" if options.dry_run else "sfc-k8s uninstalled")
    print("each node keeps the data plane's program and maps pinned: run 'sfc-k8s dp reset' there")
    return 0
