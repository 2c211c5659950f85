"""How many flows are tracked is the node agent's setting, not a chain's.

Covers, against the local API server with the CRDs of deploy/crds/ and the real kubectl: a chain
that sets the removed ``spec.dataplane.sessionTableSize`` is refused by ``kubectl apply`` with
an error naming the field, and nothing is stored (the same chain without it is admitted); a
client that does not ask for strict validation gets the field dropped, never stored. And the
agent's ``session_table_size`` (``--session-table-size``) is what sizes the node's pinned session
tables (read back from the kernel with bpftool).
"""

from __future__ import annotations

import json
import os
from typing import Any

import yaml

from sfc_k8s.dataplane import loader, structs
from tests.fixtures.apiserver import LocalAPIServer
from tests.fixtures.chains import firewall_chain
from tests.integration.operator.test_agent_programming import Api, running_agent
from tests.nettools import run, unique

REMOVED = "spec.dataplane.sessionTableSize"


def _chain_with_session_table(name: str) -> dict[str, Any]:
    body = firewall_chain(name)
    body["metadata"]["namespace"] = "default"
    body["spec"]["dataplane"] = {"sessionTableSize": 4096, "drainTimeoutSeconds": 5}
    return body


def test_a_chain_setting_the_removed_session_table_size_is_refused_by_kubectl(
    apiserver: LocalAPIServer, api: Api
) -> None:
    name = unique("sfc-sts", 30)
    body = _chain_with_session_table(name)
    refused = apiserver.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
    assert refused.returncode != 0
    assert f'unknown field "{REMOVED}"' in refused.stderr, refused.stderr
    assert apiserver.kubectl("get", "sfc", name, "-n", "default").returncode != 0, "not stored"

    del body["spec"]["dataplane"]["sessionTableSize"]
    apiserver.kubectl("apply", "-f", "-", input=yaml.safe_dump(body), check=True)
    stored = json.loads(
        apiserver.kubectl("get", "sfc", name, "-n", "default", "-o", "json", check=True).stdout
    )
    assert stored["spec"]["dataplane"] == {"drainTimeoutSeconds": 5}


def test_a_client_without_strict_validation_gets_the_field_dropped(
    apiserver: LocalAPIServer, api: Api
) -> None:
    name = unique("sfc-sts", 30)
    created = api.request(
        "POST",
        "/apis/sfc-k8s.io/v1alpha1/namespaces/default/servicefunctionchains",
        _chain_with_session_table(name),
    )
    assert created["spec"]["dataplane"] == {"drainTimeoutSeconds": 5}


def _max_entries(pin: str) -> int:
    shown = json.loads(run("bpftool", "--json", "map", "show", "pinned", pin).stdout)
    entries: int = shown["max_entries"]
    return entries


def test_the_agents_session_table_size_sizes_the_node_tables(
    apiserver: LocalAPIServer, api: Api, bpffs_root: str
) -> None:
    size = 8192  # neither the agent's default nor the tests' usual 65,536
    with running_agent(apiserver, bpffs_root, unique("node"), session_table_size=size):
        pins = loader.Pins(bpffs_root)
        for name in structs.SESSION_MAPS:
            assert os.path.exists(pins.node_map(name))
            assert _max_entries(pins.node_map(name)) == size, name
