"""The pure parts of ``sfc-k8s dp`` (no root, no BPF):

- interface lists split on commas, empty names refused;
- the status table lists every endpoint (local, or remote with its node address) with its
  stable id, state and counters, and every drop reason;
- the JSON form names drop reasons in kebab case and keeps every field;
- argument errors are one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse

import pytest

from sfc_k8s.dataplane import (
    DropReason,
    Endpoint,
    EndpointCounters,
    EndpointState,
    LinkStatus,
    Side,
    cli,
)

STATUS = LinkStatus(
    name="xc1",
    link_id=7,
    endpoints=[
        Endpoint(Side.A, "veth-a", 10, EndpointState.ACTIVE, EndpointCounters(1, 100, 2, 200), 1),
        Endpoint(Side.B, "veth-b", 11, EndpointState.DRAINING, EndpointCounters(2, 200, 1, 100), 2),
        Endpoint(
            Side.B, "", 0, EndpointState.ACTIVE, EndpointCounters(3, 300, 4, 400), 9, "10.9.0.2"
        ),
    ],
    sessions=3,
    drops={r: (5 if r is DropReason.MALFORMED else 0) for r in DropReason},
    sessions_created=4,
    cluster_id=70,
)


def test_interface_lists() -> None:
    assert cli._interfaces("a,b, c") == ["a", "b", "c"]
    with pytest.raises(argparse.ArgumentTypeError, match="empty interface name"):
        cli._interfaces("a,,b")


def test_table() -> None:
    table = cli._status_table(STATUS)
    lines = table.splitlines()
    assert lines[0] == "link xc1 (id 7, cluster id 70): 3 sessions, 4 created"
    assert lines[2].split() == [
        "a",
        "veth-a",
        "1",
        "(local)",
        "10",
        "active",
        "1",
        "100",
        "2",
        "200",
    ]
    assert lines[3].split() == [
        "b",
        "veth-b",
        "2",
        "(local)",
        "11",
        "draining",
        "2",
        "200",
        "1",
        "100",
    ]
    assert lines[4].split() == [
        "b",
        "(remote)",
        "9",
        "10.9.0.2",
        "0",
        "active",
        "3",
        "300",
        "4",
        "400",
    ]
    assert "malformed 5" in lines[-1] and "no-endpoint 0" in lines[-1]


def test_json() -> None:
    data = cli._status_json(STATUS)
    assert data["drops"]["malformed"] == 5
    assert set(data["drops"]) == {r.name.lower().replace("_", "-") for r in DropReason}
    assert data["cluster_id"] == 70
    assert data["endpoints"][1] == {
        "side": "b",
        "ifname": "veth-b",
        "ifindex": 11,
        "state": "draining",
        "counters": {"rx_packets": 2, "rx_bytes": 200, "tx_packets": 1, "tx_bytes": 100},
        "id": 2,
        "node": "",
    }
    assert data["endpoints"][2]["node"] == "10.9.0.2"


def test_argument_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["endpoint", "add", "xc1", "c", "veth0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "invalid choice" in err
