"""Helpers for the controller integration tests: a namespace on the local API server, a tiny
JSON client, pods whose readiness the test sets (playing the kubelet), and running controllers.

Not a test module; imported by tests/integration/operator/test_controller_*.py.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from kopf.testing import KopfRunner

from sfc_k8s.kube import Connection, NotFoundError
from sfc_k8s.local.kube import SyncKube
from sfc_k8s.operator.controller import Controller
from sfc_k8s.operator.settings import ControllerConfig
from tests.fixtures.apiserver import LocalAPIServer
from tests.nettools import unique
from tests.unit.api.chains import web_chain

T = TypeVar("T")
SFC = "/apis/sfc-k8s.io/v1alpha1"
PEERING = "sfc-k8s-controller"


class Cluster:
    """One test namespace on the local API server, with a node that counts as Ready."""

    def __init__(self, apiserver: LocalAPIServer, namespace: str) -> None:
        self.apiserver = apiserver
        self.ns = namespace
        self.kube = SyncKube(Connection(server=apiserver.url))

    # -- raw HTTP ---------------------------------------------------------------------------
    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        return self.kube.request(method, path, body=body, content_type=content_type)

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def find(self, path: str) -> Any:
        try:
            return self.get(path)
        except NotFoundError:
            return None

    def merge(self, path: str, patch: Any) -> Any:
        return self.request("PATCH", path, patch, "application/merge-patch+json")

    # -- objects ----------------------------------------------------------------------------
    def setup(self) -> None:
        # (the controller creates its KopfPeering object itself)
        self.request("POST", "/api/v1/namespaces", {"metadata": {"name": self.ns}})

    def peers(self) -> dict[str, Any]:
        """Controller replicas registered in this namespace's peering object."""
        path = f"/apis/kopf.dev/v1/namespaces/{self.ns}/kopfpeerings/{PEERING}"
        return dict(self.get(path).get("status") or {})

    def ensure_node(self, name: str) -> None:
        if self.find(f"/api/v1/nodes/{name}") is None:
            self.request("POST", "/api/v1/nodes", {"metadata": {"name": name}})
        self.request(
            "PATCH",
            f"/api/v1/nodes/{name}/status",
            {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
            "application/merge-patch+json",
        )

    def chain_path(self, name: str = "") -> str:
        path = f"{SFC}/namespaces/{self.ns}/servicefunctionchains"
        return f"{path}/{name}" if name else path

    def xc_path(self, name: str = "") -> str:
        path = f"{SFC}/namespaces/{self.ns}/crossconnections"
        return f"{path}/{name}" if name else path

    def create_chain(self, body: dict[str, Any]) -> Any:
        body = {**body, "metadata": {**body["metadata"], "namespace": self.ns}}
        return self.request("POST", self.chain_path(), body)

    def chain(self, name: str) -> Any:
        return self.get(self.chain_path(name))

    def xcs(self) -> dict[str, Any]:
        items = self.get(self.xc_path())["items"]
        return {x["metadata"]["name"]: x for x in items}

    def pod_path(self, name: str = "") -> str:
        path = f"/api/v1/namespaces/{self.ns}/pods"
        return f"{path}/{name}" if name else path

    def create_pod(self, name: str, app: str, *, node: str = "node-1", ready: bool = True) -> Any:
        self.ensure_node(node)
        body = {
            "metadata": {"name": name, "labels": {"app": app}},
            "spec": {
                "nodeName": node,
                "terminationGracePeriodSeconds": 30,
                "containers": [{"name": "nf", "image": "nf"}],
            },
        }
        pod = self.request("POST", self.pod_path(), body)
        if ready:
            self.set_ready(name, True)
        return pod

    def set_ready(self, name: str, ready: bool) -> None:
        """What the kubelet does when a readiness probe passes or fails."""
        status = "True" if ready else "False"
        self.merge(
            self.pod_path(name) + "/status",
            {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": status}]}},
        )

    def delete_pod(self, name: str, *, grace: int | None = None) -> None:
        options = {} if grace is None else {"gracePeriodSeconds": grace}
        self.request("DELETE", self.pod_path(name), options or None)

    def report_programmed(self, xc: dict[str, Any], node: str = "node-1") -> None:
        """Play a node agent: report the current generation as programmed on ``node``."""
        self.merge(
            self.xc_path(xc["metadata"]["name"]) + "/status",
            {
                "status": {
                    "nodes": {
                        node: {
                            "ready": True,
                            "observedGeneration": xc["metadata"]["generation"],
                            "programmedEndpoints": 1,
                        }
                    }
                }
            },
        )


def chain_body(name: str = "web") -> dict[str, Any]:
    """``web_chain`` as a client submits it: without the fields the API server sets."""
    body = web_chain(name)
    for key in ("uid", "generation"):
        del body["metadata"][key]
    return body


def endpoints(xc: dict[str, Any], side: str) -> list[tuple[str, str]]:
    return [(e["pod"], e["state"]) for e in xc["spec"][side]["endpoints"]]


def condition(chain: dict[str, Any], type_: str) -> tuple[str, str]:
    for cond in (chain.get("status") or {}).get("conditions") or ():
        if cond["type"] == type_:
            return cond["status"], cond["reason"]
    return ("", "")


def conditions(chain: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    """type -> (status, reason, message) of the chain's conditions."""
    return {
        c["type"]: (c["status"], c["reason"], c["message"])
        for c in (chain.get("status") or {}).get("conditions") or ()
    }


def eventually(check: Callable[[], T], *, timeout: float = 15.0, interval: float = 0.05) -> T:
    """Call ``check`` until it returns a truthy value without raising AssertionError or
    LookupError (an object or field that is not there yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
            error: Exception | None = None
        except (AssertionError, LookupError) as err:
            error = err
        if time.monotonic() > deadline:
            if error is not None:
                raise error
            raise AssertionError(f"condition not met within {timeout}s: {check}")
        time.sleep(interval)


def controller_config(
    apiserver: LocalAPIServer, namespace: str, **overrides: Any
) -> ControllerConfig:
    settings: dict[str, Any] = {
        "kubeconfig": str(apiserver.kubeconfig),
        "namespaces": (namespace,),
        "peering": PEERING,
        "peering_lifetime": 5,
        "retry_delay": 0.2,
        **overrides,
    }
    return ControllerConfig(**settings)


@contextlib.contextmanager
def running(controller: Controller) -> Iterator[KopfRunner]:
    """Run ``controller`` with Kopf in a background thread for the duration of the block."""
    with KopfRunner(
        controller.kopf_args(),
        registry=controller.registry,
        settings=controller.settings,
        timeout=30,
    ) as runner:
        yield runner
    assert runner.exit_code == 0, runner.output


def new_namespace() -> str:
    return unique("sfct")
