"""The node agent's per-endpoint series (no root, no data plane: the collector is fed the
``LinkStatus`` values ``Dataplane.statuses`` returns).

Covers: a remote endpoint gets the ``interface`` label ``#ID@NODE`` (as ``sfc-k8s dp`` shows it),
so two remote endpoints of one side, on one node or on two, are two series with their own
counters instead of one label set repeated; a local endpoint keeps its host interface.
"""

from __future__ import annotations

from sfc_k8s.dataplane import Endpoint, EndpointCounters, EndpointState, LinkStatus, Side
from sfc_k8s.operator.agent_metrics import DataplaneCollector, LinkSample


def _packets(status: LinkStatus) -> dict[tuple[str, str], float]:
    collector = DataplaneCollector(lambda: [LinkSample("ns", "xc", status)])
    (packets,) = [m for m in collector.collect() if m.name == "sfc_k8s_endpoint_packets"]
    found: dict[tuple[str, str], float] = {}
    for sample in packets.samples:
        key = (sample.labels["interface"], sample.labels["direction"])
        assert key not in found, f"two series with the labels {sample.labels}"
        found[key] = sample.value
    return found


def test_remote_endpoints_are_one_series_each() -> None:
    def remote(ep_id: int, node: str, tx: int) -> Endpoint:
        counters = EndpointCounters(tx_packets=tx, rx_packets=tx + 1)
        return Endpoint(Side.B, "", 0, EndpointState.ACTIVE, counters, id=ep_id, node=node)

    status = LinkStatus(
        name="link",
        link_id=1,
        endpoints=[
            Endpoint(Side.A, "sfcabc", 7, EndpointState.ACTIVE, EndpointCounters(rx_packets=3)),
            remote(2, "172.18.0.3", 10),
            remote(3, "172.18.0.3", 20),
            remote(4, "172.18.0.4", 30),
        ],
        sessions=0,
        drops={},
    )
    packets = _packets(status)
    assert packets[("sfcabc", "rx")] == 3
    assert packets[("#2@172.18.0.3", "tx")] == 10
    assert packets[("#3@172.18.0.3", "tx")] == 20
    assert packets[("#4@172.18.0.4", "rx")] == 31
    assert len(packets) == 8
