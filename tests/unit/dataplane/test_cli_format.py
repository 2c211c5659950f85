"""The pure parts of ``sfc-k8s dp`` (no root, no BPF):

- interface lists split on commas, empty names refused;
- the status table lists every endpoint with its state and counters, and every drop reason;
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
        Endpoint(Side.A, "veth-a", 10, EndpointState.ACTIVE, EndpointCounters(1, 100, 2, 200)),
        Endpoint(Side.B, "veth-b", 11, EndpointState.DRAINING, EndpointCounters(2, 200, 1, 100)),
    ],
    sessions=3,
    drops={r: (5 if r is DropReason.MALFORMED else 0) for r in DropReason},
    sessions_created=4,
)


def test_interface_lists() -> None:
    assert cli._interfaces("a,b, c") == ["a", "b", "c"]
    with pytest.raises(argparse.ArgumentTypeError, match="empty interface name"):
        cli._interfaces("a,,b")


def test_table() -> None:
    table = cli._status_table(STATUS)
    lines = table.splitlines()
    assert lines[0] == "link xc1 (id 7): 3 sessions, 4 created"
    assert lines[2].split() == ["a", "veth-a", "10", "active", "1", "100", "2", "200"]
    assert lines[3].split() == ["b", "veth-b", "11", "draining", "2", "200", "1", "100"]
    assert "malformed 5" in lines[-1] and "no-endpoint 0" in lines[-1]


def test_json() -> None:
    data = cli._status_json(STATUS)
    assert data["drops"]["malformed"] == 5
    assert set(data["drops"]) == {"malformed", "no-endpoint", "stale-endpoint", "redirect-failed"}
    assert data["endpoints"][1] == {
        "side": "b",
        "ifname": "veth-b",
        "ifindex": 11,
        "state": "draining",
        "counters": {"rx_packets": 2, "rx_bytes": 200, "tx_packets": 1, "tx_bytes": 100},
    }


def test_argument_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["endpoint", "add", "xc1", "c", "veth0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "invalid choice" in err
