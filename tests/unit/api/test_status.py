"""Chain status: per-function and per-link figures, Ready/Degraded conditions, transitions.

Covers: figures per function (terminating pods not counted as replicas) and per link (active and
draining per side); Ready=False FunctionsNotReady naming the functions; NotProgrammed until the
agents report; Ready=True once programmed (or when programming is not checked); Degraded for
selector overlaps, interface conflicts with older chains, name conflicts and agent failures;
Degraded SelectorMatchesNoPod naming the function and its selector when no pod of the namespace
matches it (distinct from pods that exist but are not Ready); readyLinks counting only the links
the agents report programmed (not those waiting or failed);
invalid specs keep the last figures and list what to fix; lastTransitionTime kept while the
status is unchanged; condition_changes for events; observedGeneration; a stable condition order.
"""

from __future__ import annotations

from sfc_k8s.api import (
    ChainInvalid,
    ConditionType,
    LinkProgramming,
    compute_chain_status,
    condition,
    condition_changes,
    get_condition,
    invalid_chain_status,
    parse_chain,
    set_condition,
)
from sfc_k8s.api.models import ConditionStatus, Reason
from sfc_k8s.api.status import selector_text
from sfc_k8s.api.types import ChainStatusBody
from tests.fixtures.chains import pod, web_chain

CHAIN = parse_chain(web_chain())
ALL_READY = [pod("cl-1", "client"), pod("fw-1", "firewall"), pod("sv-1", "server")]
NONE_READY = [pod(p.name, p.labels["app"], ready=False) for p in ALL_READY]
PROGRAMMED = {link.name: LinkProgramming() for link in CHAIN.links}


def cond(status: ChainStatusBody, type_: ConditionType) -> tuple[str, str, str]:
    c = get_condition(status.get("conditions", []), type_)
    assert c is not None
    return c["status"], c["reason"], c["message"]


def test_figures_per_function_and_link() -> None:
    pods = [
        *ALL_READY,
        pod("fw-2", "firewall", ready=False),
        pod("fw-3", "firewall", terminating=True),
    ]
    status = compute_chain_status(CHAIN, pods, programming=PROGRAMMED, now="T0")
    assert status["observedGeneration"] == 3
    assert status["functions"]["firewall"] == {
        "replicas": 2,
        "readyReplicas": 1,
        "readyReplicasByNode": {"node-1": 1},
    }
    assert status["functions"]["client"] == {
        "replicas": 1,
        "readyReplicas": 1,
        "readyReplicasByNode": {"node-1": 1},
    }
    spread = [*ALL_READY, pod("fw-2", "firewall", node="node-2"), pod("fw-3", "firewall")]
    by_node = compute_chain_status(CHAIN, spread, programming=None, now="T0")["functions"]
    assert by_node["firewall"]["readyReplicasByNode"] == {"node-1": 2, "node-2": 1}
    assert status["links"]["client-firewall"] == {
        "endpointsA": 1,
        "endpointsB": 1,
        "drainingA": 0,
        "drainingB": 1,
        "crossConnection": "web-client-firewall",
    }
    assert status["readyFunctions"] == "3/3"
    assert status["readyLinks"] == "2/2"


def test_ready_when_all_functions_ready_and_programmed() -> None:
    status = compute_chain_status(CHAIN, ALL_READY, programming=PROGRAMMED, now="T0")
    assert cond(status, ConditionType.READY) == (
        "True",
        "ChainReady",
        "3 functions have Ready replicas and 2 links are programmed",
    )
    assert cond(status, ConditionType.DEGRADED)[:2] == ("False", "AsExpected")
    assert [c["type"] for c in status["conditions"]] == ["Ready", "Degraded"]
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])
    assert all(c["lastTransitionTime"] == "T0" for c in status["conditions"])


def test_not_ready_names_functions_without_ready_replica() -> None:
    pods = [pod("cl-1", "client"), pod("fw-1", "firewall", ready=False)]
    pods += [pod("sv-1", "server", terminating=True)]
    status = compute_chain_status(CHAIN, pods, programming=PROGRAMMED, now="T0")
    assert cond(status, ConditionType.READY) == (
        "False",
        "FunctionsNotReady",
        "waiting for a Ready replica of: firewall, server",
    )
    assert cond(status, ConditionType.DEGRADED)[:2] == ("False", "AsExpected")
    assert status["readyFunctions"] == "1/3"
    assert status["readyLinks"] == "0/2"


def test_a_selector_matching_no_pod_degrades_and_names_function_and_selector() -> None:
    body = web_chain()
    body["spec"]["functions"][1]["selector"] = {
        "matchLabels": {"app": "firewal"},  # mistyped
        "matchExpressions": [
            {"key": "track", "operator": "NotIn", "values": ["canary", "beta"]},
            {"key": "debug", "operator": "DoesNotExist"},
        ],
    }
    chain = parse_chain(body)
    # pods of the other functions exist but are not Ready: that is not the problem reported
    pods = [pod("cl-1", "client", ready=False), *ALL_READY[1:]]
    status = compute_chain_status(chain, pods, programming=PROGRAMMED, now="T0")
    message = (
        "the selector of function firewall (app=firewal,track notin (beta,canary),!debug) "
        "matches no pod in namespace default, check the labels"
    )
    assert cond(status, ConditionType.DEGRADED) == ("True", "SelectorMatchesNoPod", message)
    assert cond(status, ConditionType.READY) == ("False", "SelectorMatchesNoPod", message)
    assert status["functions"]["firewall"] == {
        "replicas": 0,
        "readyReplicas": 0,
        "readyReplicasByNode": {},
    }
    # several functions: all named; pods of another namespace do not count
    elsewhere = [pod("fw-1", "firewal", namespace="other")]
    status = compute_chain_status(chain, [ALL_READY[0], *elsewhere], programming=None, now="T0")
    assert cond(status, ConditionType.DEGRADED)[1:] == (
        "SelectorMatchesNoPod",
        "the selector of functions firewall (app=firewal,track notin (beta,canary),!debug), "
        "server (app=server) matches no pod in namespace default, check the labels",
    )
    # the label fixed: pods that are merely not Ready are FunctionsNotReady, not Degraded
    fixed = compute_chain_status(CHAIN, NONE_READY, programming=PROGRAMMED, now="T0")
    assert cond(fixed, ConditionType.DEGRADED)[:2] == ("False", "AsExpected")
    assert cond(fixed, ConditionType.READY)[:2] == ("False", "FunctionsNotReady")


def test_selector_text_reads_like_kubectl() -> None:
    selector = (
        parse_chain(
            web_chain(
                functions=[
                    {
                        "name": "f",
                        "selector": {
                            "matchLabels": {"app": "fw", "tier": "a"},
                            "matchExpressions": [
                                {"key": "zone", "operator": "In", "values": ["b", "a"]},
                                {"key": "gpu", "operator": "Exists"},
                            ],
                        },
                        "interfaces": ["eth1"],
                    },
                    *web_chain()["spec"]["functions"],
                ]
            )
        )
        .functions[0]
        .selector
    )
    assert selector_text(selector) == "app=fw,tier=a,zone in (a,b),gpu"


def test_not_programmed_until_agents_report() -> None:
    status = compute_chain_status(CHAIN, ALL_READY, programming={}, now="T0")
    assert cond(status, ConditionType.READY) == (
        "False",
        "NotProgrammed",
        "waiting for the node agents on: node-1",
    )
    assert status["readyLinks"] == "0/2"  # endpoints on both sides, not programmed yet
    partial = {
        "client-firewall": LinkProgramming(),
        "firewall-server": LinkProgramming(("n3", "n2")),
    }
    status = compute_chain_status(CHAIN, ALL_READY, programming=partial, now="T0")
    # nodes only, not links: the message (and so the status) does not change link by link
    assert cond(status, ConditionType.READY)[2] == "waiting for the node agents on: n2, n3"
    assert status["readyLinks"] == "1/2"
    unchecked = compute_chain_status(CHAIN, ALL_READY, programming=None, now="T0")
    assert cond(unchecked, ConditionType.READY)[0] == "True"


def test_agent_failure_degrades_the_chain() -> None:
    failing = {**PROGRAMMED, "firewall-server": LinkProgramming(failed=(("n1", "boom"),))}
    status = compute_chain_status(CHAIN, ALL_READY, programming=failing, now="T0")
    assert status["readyLinks"] == "1/2"  # endpoints on both sides, but not programmed
    assert status["links"]["firewall-server"]["endpointsB"] == 1
    assert cond(status, ConditionType.DEGRADED) == (
        "True",
        "ProgrammingFailed",
        "node agents failed to program: firewall-server on n1: boom",
    )
    assert cond(status, ConditionType.READY)[:2] == ("False", "ProgrammingFailed")


def test_selector_overlap_degrades_and_names_the_pods() -> None:
    body = web_chain()
    body["spec"]["functions"][2]["selector"] = {"matchLabels": {"tier": "back"}}
    chain = parse_chain(body)
    pods = [*ALL_READY, pod("fw-9", "firewall", tier="back")]
    status = compute_chain_status(chain, pods, programming=None, now="T0")
    state, reason, message = cond(status, ConditionType.DEGRADED)
    assert (state, reason) == ("True", "SelectorOverlap")
    assert "fw-9 (firewall and server)" in message
    assert "make the selectors disjoint" in message
    assert cond(status, ConditionType.READY)[:2] == ("False", "SelectorOverlap")
    assert status["functions"]["firewall"]["replicas"] == 1  # fw-9 not counted


def test_name_conflicts_are_reported() -> None:
    status = compute_chain_status(
        CHAIN, ALL_READY, programming=PROGRAMMED, conflicts=["xc 'a' is owned by 'b'"], now="T0"
    )
    assert cond(status, ConditionType.DEGRADED) == (
        "True",
        "NameConflict",
        "xc 'a' is owned by 'b'",
    )


def test_writes_the_api_server_refused_are_reported_apart_from_name_conflicts() -> None:
    refused = "the API server refused CrossConnection 'a': Forbidden: crossconnections is forbidden"
    status = compute_chain_status(
        CHAIN, ALL_READY, programming=PROGRAMMED, refusals=[refused], now="T0"
    )
    assert cond(status, ConditionType.DEGRADED) == ("True", "WriteRefused", refused)
    both = compute_chain_status(
        CHAIN, ALL_READY, programming=PROGRAMMED, conflicts=["owned"], refusals=["x"], now="T0"
    )
    assert cond(both, ConditionType.DEGRADED) == ("True", "NameConflict", "owned; x")


def test_interface_conflicts_degrade_and_leave_pods_out() -> None:
    claimed = {"fw-1": ("old", "eth1")}
    status = compute_chain_status(
        CHAIN, ALL_READY, programming=None, interface_conflicts=claimed, now="T0"
    )
    state, reason, message = cond(status, ConditionType.DEGRADED)
    assert (state, reason) == ("True", "InterfaceConflict")
    assert "fw-1 (eth1 is linked by chain old)" in message
    assert status["functions"]["firewall"] == {
        "replicas": 0,
        "readyReplicas": 0,
        "readyReplicasByNode": {},
    }
    assert status["links"]["client-firewall"]["endpointsB"] == 0


def test_long_lists_are_shortened() -> None:
    body = web_chain()
    for i in range(7):
        body["spec"]["functions"].append(
            {"name": f"f{i}", "selector": {"matchLabels": {"app": f"f{i}"}}, "interfaces": ["e"]}
        )
    pods = [*NONE_READY, *(pod(f"p{i}", f"f{i}", ready=False) for i in range(7))]
    status = compute_chain_status(parse_chain(body), pods, programming=None, now="T0")
    assert cond(status, ConditionType.READY)[2].endswith("and 5 more")


def test_last_transition_time_kept_while_status_unchanged() -> None:
    first = compute_chain_status(CHAIN, NONE_READY, programming=PROGRAMMED, now="T0")
    # still not ready, for another reason: status unchanged -> time kept, reason updated
    second = compute_chain_status(CHAIN, ALL_READY, programming={}, previous=first, now="T1")
    ready = get_condition(second["conditions"], ConditionType.READY)
    assert ready is not None
    assert (ready["reason"], ready["lastTransitionTime"]) == ("NotProgrammed", "T0")
    third = compute_chain_status(
        CHAIN, ALL_READY, programming=PROGRAMMED, previous=second, now="T2"
    )
    ready = get_condition(third["conditions"], ConditionType.READY)
    assert ready is not None
    assert (ready["status"], ready["lastTransitionTime"]) == ("True", "T2")
    degraded = get_condition(third["conditions"], ConditionType.DEGRADED)
    assert degraded is not None
    assert degraded["lastTransitionTime"] == "T0"
    # a recomputation with the same inputs is equal: no write needed
    again = compute_chain_status(CHAIN, ALL_READY, programming=PROGRAMMED, previous=third, now="T3")
    assert again == third


def test_condition_changes_report_status_or_reason_transitions() -> None:
    first = compute_chain_status(CHAIN, NONE_READY, programming=PROGRAMMED, now="T0")
    assert [c["type"] for c in condition_changes([], first["conditions"])] == ["Ready", "Degraded"]
    second = compute_chain_status(CHAIN, ALL_READY, programming={}, previous=first, now="T1")
    changed = condition_changes(first["conditions"], second["conditions"])
    assert [(c["type"], c["reason"]) for c in changed] == [("Ready", "NotProgrammed")]
    assert condition_changes(second["conditions"], second["conditions"]) == []


def test_invalid_spec_status_says_what_to_fix_and_keeps_figures() -> None:
    valid = compute_chain_status(CHAIN, ALL_READY, programming=PROGRAMMED, now="T0")
    error = ChainInvalid("web", ["spec.links[0].a.function: no function named 'x'"])
    status = invalid_chain_status(error, generation=4, previous=valid, now="T1")
    assert status["observedGeneration"] == 4
    assert status["functions"] == valid["functions"]
    message = "spec is invalid, fix: spec.links[0].a.function: no function named 'x'"
    assert cond(status, ConditionType.READY) == ("False", "InvalidSpec", message)
    assert cond(status, ConditionType.DEGRADED) == ("True", "InvalidSpec", message)
    assert all(c["lastTransitionTime"] == "T1" for c in status["conditions"])
    fresh = invalid_chain_status(error, generation=1)
    assert "functions" not in fresh
    assert len(fresh["conditions"]) == 2


def test_set_condition_orders_and_replaces() -> None:
    custom = {"type": "Custom", "status": "True", "lastTransitionTime": "T0"}
    deg = condition(
        ConditionType.DEGRADED, ConditionStatus.FALSE, Reason.AS_EXPECTED, "", observed_generation=1
    )
    ready = condition(
        ConditionType.READY, ConditionStatus.FALSE, Reason.INVALID_SPEC, "x", observed_generation=1
    )
    conditions = set_condition([custom], deg, now="T1")
    conditions = set_condition(conditions, ready, now="T2")
    assert [c["type"] for c in conditions] == ["Ready", "Degraded", "Custom"]
    assert set_condition(conditions, ready, now="T3") == conditions


def test_interfaces_larger_than_a_tunnel_degrade_naming_link_and_node() -> None:
    programming = {
        **PROGRAMMED,
        "firewall-server": LinkProgramming(oversized=(("node-2", "sfc9 (1500) > 1450"),)),
    }
    status = compute_chain_status(CHAIN, ALL_READY, programming=programming, now="T0")
    # like every problem a person must fix: big frames are dropped, so not Ready either
    assert cond(status, "Ready")[:2] == (ConditionStatus.FALSE, Reason.TUNNEL_MTU_EXCEEDED)
    assert cond(status, "Degraded") == (
        ConditionStatus.TRUE,
        Reason.TUNNEL_MTU_EXCEEDED,
        "frames too large for the tunnel: firewall-server on node-2: sfc9 (1500) > 1450",
    )
