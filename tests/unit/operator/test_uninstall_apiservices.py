"""``sfc-k8s uninstall`` and the custom metrics APIServices (against the local API server).

Covers: an APIService that sends ``custom.metrics.k8s.io`` to our provider's Service is
deleted; one that another adapter registered (prometheus-adapter's Service) is left, and the
report says so; the dry run deletes neither.
"""

from __future__ import annotations

import json

import pytest

from sfc_k8s.operator import uninstall
from tests.fixtures.apiserver import LocalAPIServer


def apiservice(version: str, namespace: str, name: str) -> dict[str, object]:
    return {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": f"{version}.custom.metrics.k8s.io"},
        "spec": {
            "group": "custom.metrics.k8s.io",
            "version": version,
            "service": {"namespace": namespace, "name": name, "port": 443},
            "insecureSkipTLSVerify": True,
            "groupPriorityMinimum": 100,
            "versionPriority": 100,
        },
    }


def names(apiserver: LocalAPIServer) -> set[str]:
    out = apiserver.kubectl("get", "apiservices", "-o", "json", check=True).stdout
    return {item["metadata"]["name"] for item in json.loads(out)["items"]}


def test_only_our_apiservice_is_deleted(
    apiserver: LocalAPIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    ours = apiservice("v1beta2", "sfc-system", "sfc-k8s-metrics-provider")
    theirs = apiservice("v1beta1", "monitoring", "prometheus-adapter")
    for body in (ours, theirs):
        apiserver.kubectl("apply", "-f", "-", input=json.dumps(body), check=True)
    kubeconfig = str(apiserver.kubeconfig)

    assert uninstall.main(["--kubeconfig", kubeconfig, "--dry-run", "--timeout", "0"]) == 0
    out = capsys.readouterr().out
    assert "apiservices/v1beta2.custom.metrics.k8s.io: would delete" in out
    assert "apiservices/v1beta1.custom.metrics.k8s.io: served by another provider, left" in out
    assert names(apiserver) == {"v1beta2.custom.metrics.k8s.io", "v1beta1.custom.metrics.k8s.io"}

    assert uninstall.main(["--kubeconfig", kubeconfig, "--timeout", "0"]) == 0
    out = capsys.readouterr().out
    assert "apiservices/v1beta2.custom.metrics.k8s.io: deleted" in out
    assert names(apiserver) == {"v1beta1.custom.metrics.k8s.io"}
