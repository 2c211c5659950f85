"""CEL validation cost and ratcheting of custom-object writes in the local API server.

Covers, with the project's ServiceFunctionChain CRD (deploy/crds/): a status subresource write
evaluates no spec rule (only the status part of the schema is checked); a metadata-only update
evaluates no rule; a spec change re-evaluates only the rules whose value changed (items of a
`list-type: map` list are correlated by key); a field that a newer CRD version's rule (or
OpenAPI constraint) declares invalid is kept while unchanged (ratcheted) and refused with 422
once changed; a new invalid chain is still refused; re-applying an unchanged CRD keeps its
compiled rules; a rule that does not compile makes the CRD invalid.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from sfc_k8s.local.apiserver import StatusError, Store
from sfc_k8s.local.apiserver.resources import ResourceType
from sfc_k8s.local.apiserver.schema import StructuralSchema
from sfc_k8s.local.apiserver.store import PATCH_MERGE
from tests.fixtures.chains import firewall_chain

CRD_PATH = Path(__file__).resolve().parents[3] / "deploy" / "crds" / "servicefunctionchains.yaml"


def _crd() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return crd


def _register(store: Store, crd: dict[str, Any]) -> None:
    crds = store.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    current = store.find(crds.key, None, crd["metadata"]["name"])
    if current is None:
        store.create(crds, None, crd)
    else:
        body = {**crd, "metadata": {**crd["metadata"], **current["metadata"]}}
        store.replace(crds, None, crd["metadata"]["name"], body)


@pytest.fixture
def store() -> Store:
    store = Store()
    _register(store, _crd())
    return store


def _chains(store: Store) -> tuple[ResourceType, StructuralSchema]:
    chains = store.resource("sfc-k8s.io", "v1alpha1", "servicefunctionchains")
    schema = store.schema_of(chains)
    assert schema is not None
    return chains, schema


def _chain_schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_status_and_metadata_writes_evaluate_no_spec_rule(store: Store) -> None:
    chains, schema = _chains(store)
    store.create(chains, "default", firewall_chain())
    assert schema.evaluations > 0  # a create checks every rule
    before = schema.evaluations
    for generation in range(3):
        status = {"status": {"observedGeneration": generation, "readyFunctions": "1/3"}}
        store.patch(chains, "default", "web", PATCH_MERGE, status, subresource="status")
    store.patch(chains, "default", "web", PATCH_MERGE, {"metadata": {"labels": {"a": "b"}}})
    assert schema.evaluations == before
    stored = store.get(chains, "default", "web")
    assert stored["status"]["observedGeneration"] == 2
    assert stored["metadata"]["labels"] == {"a": "b"}


def test_status_write_checks_the_status_schema_only(store: Store) -> None:
    chains, _ = _chains(store)
    store.create(chains, "default", firewall_chain())
    with pytest.raises(StatusError) as err:
        store.patch(
            chains,
            "default",
            "web",
            PATCH_MERGE,
            {"status": {"observedGeneration": "two"}},
            subresource="status",
        )
    assert err.value.code == 422
    assert err.value.details is not None
    assert [c["field"] for c in err.value.details["causes"]] == ["status.observedGeneration"]


def test_spec_change_reevaluates_only_changed_values(store: Store) -> None:
    chains, schema = _chains(store)
    store.create(chains, "default", firewall_chain())
    before = schema.evaluations
    store.patch(
        chains, "default", "web", PATCH_MERGE, {"spec": {"dataplane": {"drainTimeoutSeconds": 5}}}
    )
    spec_rules = len(_chain_schema(_crd())["properties"]["spec"]["x-kubernetes-validations"])
    # spec changed (its own rules run); functions, links and their selectors did not
    assert schema.evaluations - before == spec_rules


def test_new_invalid_chain_is_refused(store: Store) -> None:
    chains, _ = _chains(store)
    bad = firewall_chain()
    bad["spec"]["links"][0]["b"]["function"] = "client"
    with pytest.raises(StatusError) as err:
        store.create(chains, "default", bad)
    assert err.value.code == 422
    store.create(chains, "default", firewall_chain())
    with pytest.raises(StatusError) as err:
        store.replace(chains, "default", "web", {**bad, "metadata": {"name": "web"}})
    assert err.value.code == 422


def test_unchanged_field_invalid_under_a_new_rule_is_ratcheted(store: Store) -> None:
    chains, _ = _chains(store)
    store.create(chains, "default", firewall_chain())
    crd = _crd()
    function = _chain_schema(crd)["properties"]["spec"]["properties"]["functions"]["items"]
    function.setdefault("x-kubernetes-validations", []).append(
        {"rule": "self.name.size() <= 6", "message": "function names have at most 6 characters"}
    )
    function["properties"]["name"]["maxLength"] = 7
    _register(store, crd)
    # 'firewall' (8 characters) breaks both new constraints but is stored: other writes pass
    store.patch(chains, "default", "web", PATCH_MERGE, {"metadata": {"labels": {"x": "1"}}})
    store.patch(
        chains, "default", "web", PATCH_MERGE, {"spec": {"dataplane": {"drainTimeoutSeconds": 5}}}
    )
    store.patch(
        chains,
        "default",
        "web",
        PATCH_MERGE,
        {"status": {"readyLinks": "0/2"}},
        subresource="status",
    )
    # the other items of the list are checked under the new rules and pass
    current = store.get(chains, "default", "web")
    body = copy.deepcopy(current)
    body["spec"]["functions"][1]["interfaces"] = ["eth1", "eth2"]  # unchanged item
    body["spec"]["functions"][0]["selector"] = {"matchLabels": {"app": "clients"}}
    store.replace(chains, "default", "web", body)
    # changing the offending item makes it checked again: refused
    body = copy.deepcopy(store.get(chains, "default", "web"))
    body["spec"]["functions"][1]["selector"] = {"matchLabels": {"app": "fw"}}
    with pytest.raises(StatusError) as err:
        store.replace(chains, "default", "web", body)
    assert err.value.code == 422
    assert err.value.details is not None
    messages = {c["message"] for c in err.value.details["causes"]}
    assert any("at most 6 characters" in m for m in messages), messages
    # and so is a new chain with such a name
    with pytest.raises(StatusError) as err:
        store.create(chains, "default", firewall_chain("other"))
    assert err.value.code == 422


def test_unchanged_crd_keeps_compiled_rules_and_bad_rules_are_refused(store: Store) -> None:
    _, schema = _chains(store)
    _register(store, _crd())
    assert _chains(store)[1] is schema
    crd = _crd()
    _chain_schema(crd)["properties"]["spec"]["x-kubernetes-validations"].append(
        {"rule": "self.functions.all(f, "}
    )
    with pytest.raises(StatusError) as err:
        _register(store, crd)
    assert err.value.code == 422
    assert "does not compile" in err.value.message
    assert _chains(store)[1] is schema
