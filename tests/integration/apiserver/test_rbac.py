"""The operator under the RBAC of `deploy/base/rbac.yaml`, on an HTTPS API server enforcing it.

The API server runs as `local up` runs it (its own CA, client certificates and service-account
tokens authenticated, RBAC enforced); `deploy/base`'s namespace and RBAC are applied with the
real kubectl, and the controller runs as its own process (`sfc-k8s controller`, as `local up`
starts it) with a kubeconfig carrying its service account's token from the TokenRequest API.

Covers:
- with the shipped ClusterRole the controller creates a chain's CrossConnections and writes its
  status, and the server refused it nothing;
- with a copy of the ClusterRole lacking one verb (`create` on crossconnections) the server
  answers the controller's create with Kubernetes' 403 message, and the controller reports it:
  a log line and the chain's `Degraded` condition (reason `WriteRefused`) quoting the 403;
  `kubectl auth can-i` (SelfSubjectAccessReview) with the controller's kubeconfig answers `no`
  for that verb and `yes` for the others;
- the wire: a request with no credential is `system:anonymous` and gets a 403, a bad token a
  401, the admin (client certificate of system:masters) everything; `kubectl auth whoami`
  names the service account and `kubectl auth can-i --list` (SelfSubjectRulesReview) lists its
  role's rules; the admin may act as the agent (`kubectl --as`), the agent as nobody.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sfc_k8s.local.apiserver import APIServer
from sfc_k8s.local.credentials import write_admin_kubeconfig, write_component_kubeconfig
from sfc_k8s.local.kube import ApiError, Connection, SyncKube, load_kubeconfig
from sfc_k8s.local.layout import Layout
from sfc_k8s.local.paths import rbac_manifests
from tests.fixtures.apiserver import CRD_DIR, KUBECTL
from tests.fixtures.controller import chain_body, conditions, eventually

NS = "rbac-test"
SFC = "/apis/sfc-k8s.io/v1alpha1"
CONTROLLER_SA = "system:serviceaccount:sfc-system:sfc-k8s-controller"
FORBIDDEN = (
    f'crossconnections.sfc-k8s.io is forbidden: User "{CONTROLLER_SA}" cannot create resource '
    f'"crossconnections" in API group "sfc-k8s.io" in the namespace "{NS}"'
)


@dataclass
class SecureCluster:
    layout: Layout
    server: APIServer
    admin: SyncKube

    def kubectl(
        self, *args: str, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        config = kubeconfig or self.layout.kubeconfig
        cache = self.layout.state_dir / "cache"
        return subprocess.run(
            [KUBECTL, "--kubeconfig", str(config), "--cache-dir", str(cache), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def apply(self, text: str) -> None:
        done = subprocess.run(
            [KUBECTL, "--kubeconfig", str(self.layout.kubeconfig), "apply", "-f", "-"],
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr


def _rbac_without(verb: str, plural: str) -> str:
    """deploy/base/rbac.yaml with ``verb`` removed from the controller's rule on ``plural``."""
    docs = list(yaml.safe_load_all(rbac_manifests()[1].read_text()))
    for doc in docs:
        if doc["kind"] == "ClusterRole" and doc["metadata"]["name"] == "sfc-k8s-controller":
            rule = next(r for r in doc["rules"] if r["resources"] == [plural])
            assert verb in rule["verbs"]
            rule["verbs"].remove(verb)
    return yaml.safe_dump_all(docs)


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[SecureCluster]:
    layout = Layout(tmp_path / "state")
    server = APIServer(port=0, state_dir=layout.state_dir, pki=layout.pki_dir, hpa_sync_period=3600)
    server.start()
    try:
        write_admin_kubeconfig(layout, server.url)
        cluster = SecureCluster(layout, server, SyncKube(load_kubeconfig(layout.kubeconfig)))
        crds = [a for p in sorted(CRD_DIR.glob("*.yaml")) for a in ("-f", str(p))]
        applied = cluster.kubectl("apply", *crds)
        assert applied.returncode == 0, applied.stderr
        cluster.admin.request("POST", "/api/v1/namespaces", body={"metadata": {"name": NS}})
        yield cluster
    finally:
        server.stop()


@dataclass
class ControllerRun:
    """The controller as `local up` runs it, started once the test has applied its RBAC."""

    secure: SecureCluster
    log: Path
    procs: list[subprocess.Popen[bytes]]

    def start(self) -> None:
        layout = self.secure.layout
        kubeconfig = write_component_kubeconfig(layout, self.secure.admin, "controller")
        argv = [
            sys.executable, "-m", "sfc_k8s.cli", "controller",
            "--kubeconfig", str(kubeconfig),
            "--all-namespaces",
            "--standalone",
            "--log-format", "plain",
        ]  # fmt: skip
        with open(self.log, "ab") as out:
            self.procs.append(
                subprocess.Popen(
                    argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            )


@pytest.fixture
def controller(secure: SecureCluster) -> Iterator[ControllerRun]:
    run = ControllerRun(secure, secure.layout.state_dir / "controller.log", [])
    try:
        yield run
    finally:
        for proc in run.procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _ready_pods(secure: SecureCluster) -> None:
    """The web chain's pods, bound and Ready (as a kubelet reports them)."""
    kube = secure.admin
    kube.request("POST", "/api/v1/nodes", body={"metadata": {"name": "node-1"}})
    for name, app in (("client-0", "client"), ("firewall-0", "firewall"), ("server-0", "server")):
        body = {
            "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "nf", "image": "nf"}]},
        }
        kube.request("POST", f"/api/v1/namespaces/{NS}/pods", body=body)
        kube.request(
            "PATCH",
            f"/api/v1/namespaces/{NS}/pods/{name}/status",
            body={
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
            },
            content_type="application/merge-patch+json",
        )


def _create_chain(secure: SecureCluster) -> None:
    body = chain_body("web")
    body["metadata"]["namespace"] = NS
    secure.admin.request("POST", f"{SFC}/namespaces/{NS}/servicefunctionchains", body=body)


def _chain(secure: SecureCluster) -> dict[str, Any]:
    return secure.admin.get(f"{SFC}/namespaces/{NS}/servicefunctionchains/web")


def test_the_shipped_rbac_lets_the_controller_do_its_work(
    secure: SecureCluster, controller: ControllerRun
) -> None:
    secure.apply("\n---\n".join(p.read_text() for p in rbac_manifests()))
    _ready_pods(secure)
    _create_chain(secure)
    controller.start()

    def names() -> list[str]:
        xcs = secure.admin.get(f"{SFC}/namespaces/{NS}/crossconnections")["items"]
        return sorted(x["metadata"]["name"] for x in xcs)

    eventually(lambda: names() == ["web-client-firewall", "web-firewall-server"], timeout=30)
    eventually(lambda: conditions(_chain(secure))["Degraded"][0] == "False", timeout=30)
    assert "forbidden" not in controller.log.read_text().lower()


def test_a_verb_missing_from_the_role_is_a_403_the_controller_reports(
    secure: SecureCluster, controller: ControllerRun
) -> None:
    namespace_yaml = rbac_manifests()[0].read_text()
    secure.apply(namespace_yaml + "\n---\n" + _rbac_without("create", "crossconnections"))
    _ready_pods(secure)
    _create_chain(secure)
    controller.start()

    def degraded() -> tuple[str, str, str]:
        status, reason, message = conditions(_chain(secure))["Degraded"]
        assert status == "True"
        return status, reason, message

    _, reason, message = eventually(degraded, timeout=30)
    assert reason == "WriteRefused"
    assert FORBIDDEN in message
    assert secure.admin.get(f"{SFC}/namespaces/{NS}/crossconnections")["items"] == []
    eventually(lambda: FORBIDDEN in controller.log.read_text(), timeout=10)

    kubeconfig = secure.layout.component_kubeconfig("controller")
    denied = secure.kubectl(
        "auth", "can-i", "create", "crossconnections.sfc-k8s.io", "-n", NS, kubeconfig=kubeconfig
    )
    assert (denied.returncode, denied.stdout.strip()) == (1, "no")
    for verb in ("get", "list", "watch", "patch", "delete"):
        allowed = secure.kubectl(
            "auth", "can-i", verb, "crossconnections.sfc-k8s.io", "-n", NS, kubeconfig=kubeconfig
        )
        assert (allowed.returncode, allowed.stdout.strip()) == (0, "yes"), verb


def test_anonymous_bad_token_admin_and_service_account_identities(secure: SecureCluster) -> None:
    secure.apply("\n---\n".join(p.read_text() for p in rbac_manifests()))
    ca = str(secure.layout.pki_dir / "ca.crt")
    anonymous = SyncKube(Connection(server=secure.server.url, ca_path=ca))
    assert anonymous.get("/version")["major"] == "1"  # public to everyone, as in Kubernetes
    with pytest.raises(ApiError) as denied:
        anonymous.get(f"/api/v1/namespaces/{NS}/pods")
    assert denied.value.status == 403
    assert denied.value.message == (
        'pods is forbidden: User "system:anonymous" cannot list resource "pods" in API group "" '
        f'in the namespace "{NS}"'
    )
    forged = SyncKube(Connection(server=secure.server.url, ca_path=ca, token="e30.e30.AAAA"))
    with pytest.raises(ApiError) as refused:
        forged.get("/version")
    assert (refused.value.status, refused.value.reason) == (401, "Unauthorized")
    assert secure.admin.get("/api/v1/nodes")["kind"] == "NodeList"

    kubeconfig = write_component_kubeconfig(secure.layout, secure.admin, "agent")
    who = secure.kubectl(
        "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", kubeconfig=kubeconfig
    )
    assert who.stdout == "system:serviceaccount:sfc-system:sfc-k8s-agent", who.stderr
    listed = secure.kubectl("auth", "can-i", "--list", "-n", NS, kubeconfig=kubeconfig)
    rows = {" ".join(line.split()) for line in listed.stdout.splitlines()}
    assert "crossconnections.sfc-k8s.io/status [] [] [patch]" in rows, listed.stdout
    assert "pods [] [] [get]" in rows, listed.stdout
    # the admin acting as the agent (kubectl --as), and the agent may not act as anyone
    agent_sa = "--as=system:serviceaccount:sfc-system:sfc-k8s-agent"
    can_get = secure.kubectl("auth", "can-i", "get", "pods", "-n", NS, agent_sa)
    can_list = secure.kubectl("auth", "can-i", "list", "pods", "-n", NS, agent_sa)
    assert (can_get.stdout.strip(), can_list.stdout.strip()) == ("yes", "no")
    acting = secure.kubectl("get", "nodes", "--as=jane", kubeconfig=kubeconfig)
    assert 'User "system:serviceaccount:sfc-system:sfc-k8s-agent" cannot impersonate resource' in (
        acting.stderr
    )
    # the agent may read a pod, not list them
    agent = SyncKube(load_kubeconfig(kubeconfig))
    with pytest.raises(ApiError) as listing:
        agent.get(f"/api/v1/namespaces/{NS}/pods")
    assert listing.value.status == 403
    # a token outlives nothing: its service account deleted and made again, the old one is 401
    secure.admin.request("DELETE", "/api/v1/namespaces/sfc-system/serviceaccounts/sfc-k8s-agent")
    secure.admin.request(
        "POST",
        "/api/v1/namespaces/sfc-system/serviceaccounts",
        body={"metadata": {"name": "sfc-k8s-agent"}},
    )
    with pytest.raises(ApiError) as stale:
        agent.get("/api/v1/nodes")
    assert stale.value.status == 401
