"""The keys the controller indexes chains under, to find those that may select a pod
(``sfc_k8s.api.pods.selection_keys`` and ``pod_selection_keys``).

Covers: a function with matchLabels is keyed by its first pair, one with matchExpressions only
by None (it may select any pod); a pod is looked up under each of its label pairs and None; and
the property the controller relies on: every chain with a function selecting a pod is found
under one of that pod's keys.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sfc_k8s.api import functions_of, parse_chain, pod_selection_keys, selection_keys
from tests.fixtures.chains import pod, web_chain


def test_a_chain_is_keyed_by_the_first_label_pair_of_each_function() -> None:
    chain = parse_chain(web_chain())
    assert selection_keys(chain) == {("app", "client"), ("app", "firewall"), ("app", "server")}


def test_a_function_without_match_labels_is_keyed_by_none() -> None:
    body = web_chain()
    body["spec"]["functions"][0]["selector"] = {
        "matchExpressions": [{"key": "app", "operator": "In", "values": ["client"]}]
    }
    assert None in selection_keys(parse_chain(body))


def test_a_pod_is_looked_up_under_its_label_pairs_and_none() -> None:
    assert pod_selection_keys({"app": "fw", "tier": "a"}) == [("app", "fw"), ("tier", "a"), None]


LABELS = st.dictionaries(st.sampled_from(["app", "tier", "x"]), st.sampled_from(["client", "a"]))


@given(LABELS, st.booleans())
def test_every_chain_selecting_a_pod_is_found_under_its_keys(
    labels: dict[str, str], expressions: bool
) -> None:
    body = web_chain()
    if expressions:
        body["spec"]["functions"][0]["selector"] = {
            "matchExpressions": [{"key": "tier", "operator": "Exists"}]
        }
    chain = parse_chain(body)
    candidate = pod(
        "p", labels.get("app", "none"), **{k: v for k, v in labels.items() if k != "app"}
    )
    if functions_of(chain, candidate):
        assert selection_keys(chain) & set(pod_selection_keys(candidate.labels))
