"""Stable identities: the link's cluster id and its endpoints' ids (``sfc_k8s.api.identity``).

Covers: first assignment (cluster id lowest free, endpoint ids from 1 in list order across both
sides); ids kept across reconciles while an endpoint is listed, draining included; a new
endpoint never gets the id of one removed until the counter has gone round every id; a cluster
id held by another CrossConnection is given up; malformed previous ids are replaced; the limits
are the data plane's; the parser carries ids and refuses bad ones naming the field.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfc_k8s.api import (
    CrossConnectionInvalid,
    assign_identities,
    compute_links,
    cross_connection_body,
    parse_chain,
    parse_cross_connection,
)
from sfc_k8s.api.identity import choose_cluster_id
from sfc_k8s.api.models import CLUSTER_ID_MAX, ENDPOINT_ID_MAX, CrossConnectionSpec
from sfc_k8s.dataplane import structs
from tests.fixtures.chains import pod, web_chain

CHAIN = parse_chain(web_chain())


def first_link(pods: list[Any]) -> CrossConnectionSpec:
    return compute_links(CHAIN, pods)[0]


def ids(spec: CrossConnectionSpec) -> dict[str, int]:
    return {ep.pod: ep.id for _, ep in spec.endpoints}


def test_limits_are_the_data_planes() -> None:
    assert ENDPOINT_ID_MAX == structs.MAX_EP_ID
    assert CLUSTER_ID_MAX == structs.MAX_CLUSTER_LINKS - 1


def test_first_assignment() -> None:
    pods = [pod("cl-1", "client"), pod("fw-1", "firewall"), pod("fw-2", "firewall")]
    spec = assign_identities(first_link(pods), None, {1, 2})
    assert spec.cluster_id == 3
    assert ids(spec) == {"cl-1": 1, "fw-1": 2, "fw-2": 3}
    assert spec.last_endpoint_id == 3


def test_ids_stay_while_listed_and_are_not_reused_soon() -> None:
    pods = [pod("cl-1", "client"), pod("fw-1", "firewall"), pod("fw-2", "firewall")]
    first = assign_identities(first_link(pods), None, set())
    body = first.to_body()
    # fw-1 drains, then is removed; fw-3 arrives: fw-1's id 2 is not handed out again
    pods[1] = pod("fw-1", "firewall", terminating=True)
    draining = assign_identities(first_link(pods), body, set())
    assert ids(draining) == ids(first)
    assert draining.cluster_id == first.cluster_id
    pods = [pods[0], pods[2], pod("fw-3", "firewall")]
    later = assign_identities(first_link(pods), draining.to_body(), set())
    assert ids(later) == {"cl-1": 1, "fw-2": 3, "fw-3": 4}
    assert later.last_endpoint_id == 4


def test_counter_goes_round_skipping_ids_in_use() -> None:
    pods = [pod("cl-1", "client"), pod("fw-1", "firewall")]
    previous = assign_identities(first_link(pods), None, set()).to_body()
    previous["lastEndpointId"] = ENDPOINT_ID_MAX
    pods.append(pod("fw-2", "firewall"))
    spec = assign_identities(first_link(pods), previous, set())
    assert ids(spec) == {"cl-1": 1, "fw-1": 2, "fw-2": 3}  # 1 and 2 still in use


def test_cluster_id_held_by_another_is_given_up() -> None:
    previous = assign_identities(first_link([pod("cl-1", "client")]), None, set()).to_body()
    assert previous["clusterId"] == 1
    assert assign_identities(first_link([pod("cl-1", "client")]), previous, {1}).cluster_id == 2
    assert choose_cluster_id(7, {1}) == 7
    assert choose_cluster_id("7", set()) == 1
    assert choose_cluster_id(True, set()) == 1


def test_malformed_or_duplicated_previous_ids_are_replaced() -> None:
    pods = [pod("cl-1", "client"), pod("fw-1", "firewall"), pod("fw-2", "firewall")]
    previous = assign_identities(first_link(pods), None, set()).to_body()
    previous["b"]["endpoints"][0]["id"] = 1  # duplicates cl-1's
    previous["b"]["endpoints"][1]["id"] = "x"
    spec = assign_identities(first_link(pods), previous, set())
    assert ids(spec) == {"cl-1": 1, "fw-1": 4, "fw-2": 5}


@given(st.lists(st.sets(st.integers(0, 12), max_size=8), min_size=1, max_size=12))
def test_ids_unique_and_stable_over_any_history(history: list[set[int]]) -> None:
    previous: dict[str, Any] | None = None
    given_out: dict[int, str] = {}  # every id ever handed out, to whom
    kept: dict[str, int] = {}
    for present in history:
        pods = [pod("cl-1", "client")] + [pod(f"fw-{i}", "firewall") for i in sorted(present)]
        spec = assign_identities(first_link(pods), previous, set())
        now = ids(spec)
        assert len(set(now.values())) == len(now)
        for name, ident in now.items():
            if name in kept:
                assert kept[name] == ident  # stable while listed
            else:  # new (or back after removal): an id never handed out in this short history
                assert ident not in given_out
            given_out[ident] = name
        kept = now
        previous = spec.to_body()


def test_parser_carries_ids_and_refuses_bad_ones() -> None:
    spec = assign_identities(first_link([pod("cl-1", "client"), pod("fw-1", "firewall")]), None, ())
    body = cross_connection_body(CHAIN, spec)
    assert parse_cross_connection(body) == spec
    bad = copy.deepcopy(body)
    bad["spec"]["clusterId"] = 70000
    bad["spec"]["lastEndpointId"] = -1
    bad["spec"]["a"]["endpoints"][0]["id"] = "one"
    bad["spec"]["b"]["endpoints"][0]["id"] = 1
    with pytest.raises(CrossConnectionInvalid) as info:
        parse_cross_connection(bad)
    assert info.value.problems == (
        "spec.a.endpoints[0].id: 'one' is not an id: expected an integer from 1 to 4095",
        "spec.clusterId: 70000 is not an id: expected an integer from 1 to 65535",
        "spec.lastEndpointId: -1 is not an id: expected an integer from 1 to 4095",
    )
    dup = copy.deepcopy(body)
    dup["spec"]["b"]["endpoints"][0]["id"] = 1
    with pytest.raises(CrossConnectionInvalid) as info:
        parse_cross_connection(dup)
    assert info.value.problems == (
        "spec.b.endpoints[0].id: id 1 is already the id of spec.a.endpoints[0]; ids are unique"
        " within a cross-connection",
    )


def test_cluster_id_search_starts_where_the_caller_says_every_id_below_is_held() -> None:
    held = set(range(1, 6))
    assert choose_cluster_id(None, held, search_from=6) == 6
    assert choose_cluster_id(None, held, search_from=9) == 9  # the caller's word is taken
    assert choose_cluster_id(None, held, search_from=0) == 6  # nothing below 1
    assert choose_cluster_id(3, {1, 2}, search_from=9) == 3  # a free current id is kept
    spec = assign_identities(first_link([pod("cl-1", "client")]), None, held, search_from=6)
    assert spec.cluster_id == 6


def test_cluster_id_search_tests_one_id_when_the_caller_knows_the_floor() -> None:
    tested: list[int] = []

    class Held:
        def __contains__(self, item: object) -> bool:
            tested.append(int(str(item)))
            return int(str(item)) <= 1000

    assert choose_cluster_id(None, Held(), search_from=1001) == 1001
    assert tested == [1001]
