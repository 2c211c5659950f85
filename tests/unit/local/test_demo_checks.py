"""The demo's judges, each shown failing on the case it exists for (no cluster, no root).

Covers: ``FlowProgress`` records a pause of a real echo flow (a loopback TCP connection whose
far end stops echoing for a while) and keeps a pause still open when the traffic stops;
``stalls`` holds a flow to STALL, and to MOVED_STALL only in the step where its replica was
removed;
``kept_replicas`` fails with no flow on a remaining replica (it would hold vacuously), with a
flow that moved off a remaining replica, with a moved flow on no active replica, and with a
flow missing from the sessions before the step;
``cross_node`` holds when a byte-exact flow runs through the other node's replica, held in both
nodes' sessions, with tunnel counters moving on both ends, and fails when the replicas are on
one node, when the flow is only in the client's node's sessions, when it is not byte-exact, when
the far node received nothing from the client, and when the counters did not move in the step.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from sfc_k8s.local.demo import (
    MOVED_STALL,
    STALL,
    XC_IN,
    CrossNodeView,
    FlowProgress,
    Gap,
    Placed,
    Tunnel,
    cross_node,
    kept_replicas,
    stalls,
)
from sfc_k8s.local.traffic import EchoFlow, EndpointSample


class Echoer:
    """The far end of a socket pair: echoes what it reads unless paused."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.running = threading.Event()
        self.running.set()
        self._done = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done:
            self.running.wait()
            try:
                data = self.sock.recv(4096)
                if not data:
                    return
                self.sock.sendall(data)
            except OSError:  # closed by ``close``
                return

    def close(self) -> None:
        self._done = True
        self.running.set()
        self.sock.close()
        self._thread.join(timeout=5)


@pytest.fixture
def echo_pair() -> Iterator[tuple[EchoFlow, Echoer]]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        near = socket.create_connection(listener.getsockname(), timeout=20.0)
        far, _ = listener.accept()
    flow, echoer = EchoFlow(7, near), Echoer(far)
    yield flow, echoer
    echoer.close()
    flow.stop()


def _wait(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_progress_records_a_pause_of_a_real_flow(echo_pair: tuple[EchoFlow, Echoer]) -> None:
    flow, echoer = echo_pair
    progress = FlowProgress(time.monotonic(), record=0.5)
    progress.add([flow])
    progress.start()
    _wait(lambda: flow.bytes_ok > 0)
    echoer.running.clear()  # the path stops carrying the flow
    time.sleep(1.2)
    assert progress.open_gaps() and progress.open_gaps()[0].flow == 7
    resumed_at = flow.bytes_ok
    echoer.running.set()
    _wait(lambda: flow.bytes_ok > resumed_at)
    _wait(lambda: bool(progress.gaps))
    progress.close()
    assert [g.flow for g in progress.gaps] == [7]
    assert progress.gaps[0].seconds > 0.5  # the pause was 1.2 s (minus one echo and one poll)
    assert not flow.broken


def test_progress_keeps_a_pause_still_open_at_the_end(echo_pair: tuple[EchoFlow, Echoer]) -> None:
    flow, echoer = echo_pair
    progress = FlowProgress(time.monotonic(), record=0.3)
    progress.add([flow])
    progress.start()
    _wait(lambda: flow.bytes_ok > 0)
    echoer.running.clear()
    time.sleep(0.8)
    progress.close()  # the traffic stops while the flow is stalled
    assert [g.flow for g in progress.gaps] == [7]
    assert progress.during(0.0, progress.now()) == progress.gaps


def test_stalls_bound_a_moved_flow_only_in_its_step() -> None:
    moved = {2: (10.0, 20.0)}
    gaps = [
        Gap(1, 5.0, 5.0 + STALL - 0.1),  # under STALL: fine
        Gap(1, 8.0, 8.0 + STALL),  # a flow that did not move, paused STALL: a stall
        Gap(2, 12.0, 12.0 + MOVED_STALL - 1),  # moved in this step: allowed
        Gap(2, 30.0, 30.0 + STALL + 1),  # the same flow later: held to STALL again
        Gap(2, 12.0, 12.0 + MOVED_STALL),  # moved, but too long even so
    ]
    assert stalls(gaps, moved) == [(gaps[1], STALL), (gaps[3], STALL), (gaps[4], MOVED_STALL)]


class _Flow:
    """What ``kept_replicas`` reads of a flow: its client port and index."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.local_port = 40000 + index


FINAL = {"fw-a": (1.0, 1.0, "active")}  # after scaling to 1: fw-a remains, fw-b and fw-c left


def _judge(before: dict[int, str], after: dict[int, str], flows: int = 3) -> tuple[bool, str]:
    kept = kept_replicas(
        [_Flow(i) for i in range(flows)],  # type: ignore[misc]
        {40000 + i: iface for i, iface in before.items()},
        {40000 + i: iface for i, iface in after.items()},
        FINAL,
    )
    return kept.ok, kept.detail


def test_kept_replicas_holds_when_flows_stay_and_moved_ones_land() -> None:
    ok, detail = _judge({0: "fw-a", 1: "fw-b", 2: "fw-c"}, {0: "fw-a", 1: "fw-a", 2: "fw-a"})
    assert ok and detail == "1 stayed, 2 moved from removed replicas"


def test_kept_replicas_fails_with_no_flow_on_the_remaining_replica() -> None:
    ok, detail = _judge({0: "fw-b", 1: "fw-b", 2: "fw-c"}, {0: "fw-a", 1: "fw-a", 2: "fw-a"})
    assert not ok and "no flow was on a replica that remains" in detail


def test_kept_replicas_fails_when_a_flow_left_a_remaining_replica() -> None:
    ok, detail = _judge({0: "fw-a", 1: "fw-a", 2: "fw-c"}, {0: "fw-a", 1: "fw-c", 2: "fw-a"})
    assert not ok and "1 moved unexpectedly" in detail


def test_kept_replicas_fails_when_a_moved_flow_is_on_no_active_replica() -> None:
    ok, detail = _judge({0: "fw-a", 1: "fw-b", 2: "fw-c"}, {0: "fw-a", 1: "fw-a"})
    assert not ok and "1 moved flows on no active replica" in detail


def test_kept_replicas_fails_when_a_flow_was_not_placed_before() -> None:
    ok, detail = _judge({0: "fw-a", 1: "fw-a"}, {0: "fw-a", 1: "fw-a"})
    assert not ok and "1 flows not found in the sessions" in detail


NODES = ["node-1", "node-2"]
LOCAL_FLOW = ("l4-v4", 6, "192.168.100.10", 40001, "192.168.100.20", 7007)
CROSSING_FLOW = ("l4-v4", 6, "192.168.100.10", 40002, "192.168.100.20", 7007)


def _tunnel(node_1: tuple[int, int], node_2: tuple[int, int]) -> Tunnel:
    """Remote endpoint counters (tx, rx): node-1's view of node-2's replica (side b), node-2's
    view of the client (side a)."""
    return {
        ("node-1", XC_IN, "#2@172.18.0.3"): EndpointSample(
            XC_IN, "b", "#2@172.18.0.3", "active", tx_packets=node_1[0], rx_packets=node_1[1]
        ),
        ("node-2", XC_IN, "#1@172.18.0.2"): EndpointSample(
            XC_IN, "a", "#1@172.18.0.2", "active", tx_packets=node_2[0], rx_packets=node_2[1]
        ),
    }


def _cross(
    *,
    fw_b_node: str = "node-2",
    seen_on: tuple[str, ...] = ("node-1", "node-2"),
    exact: bool = True,
    after: Tunnel | None = None,
    before: Tunnel | None = None,
) -> tuple[bool, str]:
    view = CrossNodeView(
        nodes=NODES,
        client_node="node-1",
        node_of={"fw-a": "node-1", "fw-b": fw_b_node},
        active={"fw-a", "fw-b"},
        exact={40001: True, 40002: exact},
    )
    known = {
        LOCAL_FLOW: Placed("fw-a", {"node-1"}),
        CROSSING_FLOW: Placed("fw-b", set(seen_on)),
    }
    tunnel = (before or {}, _tunnel((60, 50), (50, 60)) if after is None else after)
    verdict = cross_node(view, known, tunnel)
    return verdict.ok, verdict.detail


def test_cross_node_holds_for_a_flow_through_the_other_nodes_replica() -> None:
    ok, detail = _cross()
    assert ok, detail
    assert "1 long-lived flows from node-1 crossed" in detail and "1 byte-exact" in detail
    assert "node-1 sent 60 packets to remote replicas and received 50" in detail
    assert "node-2 received 60 from the client and sent 50 back" in detail


def test_cross_node_fails_with_every_replica_on_one_node() -> None:
    ok, detail = _cross(fw_b_node="node-1")
    assert not ok and "replicas on node-1 (2);" in detail and "0 long-lived flows" in detail


def test_cross_node_fails_for_a_flow_only_in_the_client_nodes_sessions() -> None:
    ok, detail = _cross(seen_on=("node-1",))
    assert not ok and "0 long-lived flows" in detail


def test_cross_node_fails_for_a_broken_flow() -> None:
    ok, detail = _cross(exact=False)
    assert not ok and "0 byte-exact" in detail


def test_cross_node_fails_when_the_far_node_received_nothing() -> None:
    ok, detail = _cross(after=_tunnel((60, 50), (50, 0)))
    assert not ok and "node-2 received 0 from the client" in detail


def test_cross_node_fails_when_the_counters_did_not_move_in_the_step() -> None:
    counters = _tunnel((60, 50), (50, 60))
    ok, detail = _cross(before=counters, after=counters)
    assert not ok and "node-1 sent 0 packets" in detail
