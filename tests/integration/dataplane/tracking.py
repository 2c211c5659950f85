"""Where did each flow go? Read the data plane's sessions and counters per replica.

Used by the data-plane traffic tests to check flow affinity (both links agree on the replica of
a flow), spreading (flows per replica) and that scaling moves only the flows it should.
"""

from __future__ import annotations

from dataclasses import dataclass

from sfc_k8s.dataplane import Dataplane, EndpointCounters, Side
from tests.fixtures.topology import ChainLinks


@dataclass(frozen=True)
class FlowPath:
    """The replicas a flow crosses, as recorded by each link ("" if a link has no session)."""

    via_link1: str  # replica namespace named by link 1's session (its side-B endpoint)
    via_link2: str  # replica namespace named by link 2's session (its side-A endpoint)


def _by_client_port(
    dataplane: Dataplane, link: str, proto: int, server_port: int, side: Side
) -> dict[int, str]:
    """Client source port -> endpoint ifname on ``side``, for the flows to ``server_port``."""
    out = {}
    for session in dataplane.sessions(link):
        if session.proto != proto:
            continue
        ports = {session.port_lo, session.port_hi}
        if server_port not in ports or len(ports) != 2:
            continue
        (client_port,) = ports - {server_port}
        out[client_port] = session.endpoint(side)
    return out


def flow_paths(links: ChainLinks, proto: int, server_port: int) -> dict[int, FlowPath]:
    """Client source port -> the replica each link sends that flow through."""
    dp, chain = links.dataplane, links.chain
    names = {}
    for replica in chain.replicas:
        names[replica.eth1_host] = replica.name
        names[replica.eth2_host] = replica.name
    l1 = _by_client_port(dp, links.link1, proto, server_port, Side.B)
    l2 = _by_client_port(dp, links.link2, proto, server_port, Side.A)
    return {
        port: FlowPath(names.get(l1.get(port, ""), ""), names.get(l2.get(port, ""), ""))
        for port in sorted(set(l1) | set(l2))
    }


def counters(dataplane: Dataplane, link: str) -> dict[str, EndpointCounters]:
    """Endpoint ifname -> its counters on ``link``."""
    return {e.ifname: e.counters for e in dataplane.status(link).endpoints}
