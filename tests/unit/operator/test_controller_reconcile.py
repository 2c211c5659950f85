"""The controller running for real (Kopf via KopfRunner) against the local API server.

Pods are created through the API and their Ready condition patched by the test, playing the
kubelet; node agents are played by patching CrossConnection status. Covers:
- a chain and its pods -> one CrossConnection per link (owner reference, labels, endpoints with
  host interfaces) and a status with per-function and per-link figures;
- a function whose selector matches no pod -> Degraded SelectorMatchesNoPod naming it and its
  selector; once a pod matches but is not Ready -> FunctionsNotReady, Degraded=False;
- Ready=False/NotProgrammed until the agents report the current generation, then Ready=True;
  readyLinks counts only the links reported programmed (not one an agent failed to program);
- scaling up and down: new Ready pods become active endpoints; a pod deleted gracefully is
  draining while it terminates, then gone; a pod failing readiness leaves; the same through a
  Deployment scaled with the real kubectl;
- an invalid chain (selector matching another function's pods; a spec the CRD cannot catch)
  gets a condition saying what to fix while another chain in the namespace is untouched;
- deleting a chain -> its CrossConnections are garbage-collected through the owner reference;
- removing a link from a chain -> its CrossConnection is deleted;
- a CrossConnection name taken by another chain -> NameConflict; events posted on the chains;
- a pod interface linked by two chains stays with the older one; the younger chain reports the
  conflict and takes the pods over when the older chain is deleted;
- a controller restart -> no duplicate objects, no spurious writes, state kept.
"""

from __future__ import annotations

import copy
from typing import Any

from sfc_k8s.operator.controller import Controller
from tests.fixtures.controller import (
    Cluster,
    chain_body,
    condition,
    conditions,
    controller_config,
    endpoints,
    eventually,
    running,
)


def test_chain_and_pods_become_crossconnections_and_status(cluster: Cluster) -> None:
    cluster.create_pod("client-0", "client")
    cluster.create_pod("fw-0", "firewall")
    cluster.create_pod("fw-1", "firewall", ready=False)
    cluster.create_chain(chain_body())
    controller = Controller(controller_config(cluster.apiserver, cluster.ns))
    with running(controller):
        xcs = eventually(lambda: len(cluster.xcs()) == 2 and cluster.xcs())
        xc = xcs["web-client-firewall"]
        chain = cluster.chain("web")
        assert xc["metadata"]["labels"] == {
            "sfc-k8s.io/chain": "web",
            "sfc-k8s.io/link": "client-firewall",
        }
        (owner,) = xc["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "ServiceFunctionChain",
            "web",
            chain["metadata"]["uid"],
            True,
        )
        assert endpoints(xc, "a") == [("client-0", "active")]
        assert endpoints(xc, "b") == [("fw-0", "active")]
        assert xc["spec"]["b"]["endpoints"][0]["hostInterface"].startswith("sfc")

        def status_reported() -> Any:
            status = cluster.chain("web").get("status") or {}
            assert status.get("functions", {}).get("firewall") == {
                "replicas": 2,
                "readyReplicas": 1,
                "readyReplicasByNode": {"node-1": 1},
            }
            return status

        status = eventually(status_reported)
        assert status["readyFunctions"] == "2/3"
        assert status["links"]["client-firewall"]["crossConnection"] == "web-client-firewall"
        # no pod has the server's label: said as such, not as a replica still starting
        unmatched = (
            "the selector of function server (app=server) matches no pod in namespace "
            f"{cluster.ns}, check the labels"
        )
        assert conditions(cluster.chain("web")) == {
            "Ready": ("False", "SelectorMatchesNoPod", unmatched),
            "Degraded": ("True", "SelectorMatchesNoPod", unmatched),
        }
        cluster.create_pod("server-0", "server", ready=False)  # exists, not Ready yet
        eventually(lambda: condition(cluster.chain("web"), "Degraded") == ("False", "AsExpected"))
        assert condition(cluster.chain("web"), "Ready") == ("False", "FunctionsNotReady")

        cluster.set_ready("server-0", True)
        eventually(lambda: endpoints(cluster.xcs()["web-firewall-server"], "b"))
        eventually(lambda: condition(cluster.chain("web"), "Ready")[1] == "NotProgrammed")
        assert cluster.chain("web")["status"]["readyLinks"] == "0/2"  # endpoints, not programmed
        xcs = cluster.xcs()
        cluster.report_programmed(xcs["web-client-firewall"])
        failing = xcs["web-firewall-server"]
        cluster.merge(  # an agent that cannot program its link
            cluster.xc_path(failing["metadata"]["name"]) + "/status",
            {
                "status": {
                    "nodes": {
                        "node-1": {
                            "ready": False,
                            "observedGeneration": failing["metadata"]["generation"],
                            "message": "interface eth9 missing",
                        }
                    }
                }
            },
        )
        eventually(lambda: condition(cluster.chain("web"), "Degraded")[1] == "ProgrammingFailed")
        assert cluster.chain("web")["status"]["readyLinks"] == "1/2"
        cluster.report_programmed(failing)
        eventually(lambda: condition(cluster.chain("web"), "Ready") == ("True", "ChainReady"))
        assert cluster.chain("web")["status"]["readyLinks"] == "2/2"
        table = cluster.apiserver.kubectl("get", "sfc", "-n", cluster.ns, check=True).stdout
        assert table.split("\n")[1].split()[:4] == ["web", "3/3", "2/2", "True"]


def test_scaling_follows_pods_and_terminating_pods_drain(cluster: Cluster) -> None:
    for name, app in [("client-0", "client"), ("fw-0", "firewall"), ("server-0", "server")]:
        cluster.create_pod(name, app)
    cluster.create_chain(chain_body())
    with running(Controller(controller_config(cluster.apiserver, cluster.ns))):

        def firewall_side() -> list[tuple[str, str]]:
            return endpoints(cluster.xcs()["web-client-firewall"], "b")

        eventually(lambda: firewall_side() == [("fw-0", "active")])
        # scale up: a replica appears, becomes Ready
        cluster.create_pod("fw-1", "firewall", ready=False)
        cluster.create_pod("fw-2", "firewall")
        eventually(lambda: firewall_side() == [("fw-0", "active"), ("fw-2", "active")])
        cluster.set_ready("fw-1", True)
        eventually(lambda: len(firewall_side()) == 3)
        eventually(
            lambda: (
                endpoints(cluster.xcs()["web-firewall-server"], "a")
                == [("fw-0", "active"), ("fw-1", "active"), ("fw-2", "active")]
            )
        )
        # scale down: graceful deletion -> draining while terminating, then gone
        cluster.delete_pod("fw-0")
        eventually(lambda: ("fw-0", "draining") in firewall_side())
        status = eventually(lambda: cluster.chain("web")["status"]["links"]["client-firewall"])
        eventually(
            lambda: cluster.chain("web")["status"]["links"]["client-firewall"]["drainingB"] == 1
        )
        assert status["crossConnection"] == "web-client-firewall"
        cluster.delete_pod("fw-0", grace=0)  # the kubelet confirms the termination
        eventually(lambda: firewall_side() == [("fw-1", "active"), ("fw-2", "active")])
        # a replica failing its readiness probe stops being an endpoint
        cluster.set_ready("fw-2", False)
        eventually(lambda: firewall_side() == [("fw-1", "active")])
        eventually(
            lambda: (
                cluster.chain("web")["status"]["functions"]["firewall"]
                == {"replicas": 2, "readyReplicas": 1, "readyReplicasByNode": {"node-1": 1}}
            )
        )


def test_invalid_chain_gets_a_condition_and_others_are_untouched(cluster: Cluster) -> None:
    pods = [("client-0", "client"), ("fw-0", "firewall"), ("server-0", "server")]
    pods += [("client-b", "client-b"), ("fw-b", "firewall-b"), ("server-b", "server-b")]
    for name, app in pods:
        cluster.create_pod(name, app)
    cluster.create_chain(chain_body("good"))
    overlapping = chain_body("overlap")  # pods of its own, but selectors that overlap
    for fn in overlapping["spec"]["functions"]:
        fn["selector"]["matchLabels"]["app"] += "-b"
    overlapping["spec"]["functions"][2]["selector"] = {
        "matchExpressions": [{"key": "app", "operator": "In", "values": ["server-b", "firewall-b"]}]
    }
    cluster.create_chain(overlapping)
    with running(Controller(controller_config(cluster.apiserver, cluster.ns))):
        eventually(lambda: condition(cluster.chain("overlap"), "Degraded")[1] == "SelectorOverlap")
        message = next(
            c["message"]
            for c in cluster.chain("overlap")["status"]["conditions"]
            if c["type"] == "Degraded"
        )
        assert "fw-b (firewall and server)" in message
        assert condition(cluster.chain("overlap"), "Ready") == ("False", "SelectorOverlap")
        good = eventually(lambda: cluster.xcs().get("good-firewall-server"))
        eventually(lambda: endpoints(cluster.xcs()["good-firewall-server"], "a"))
        assert endpoints(cluster.xcs()["overlap-firewall-server"], "a") == []
        assert endpoints(cluster.xcs()["overlap-firewall-server"], "b") == [("server-b", "active")]
        assert good["spec"]["chain"] == "good"
        # an edit that breaks the spec: reported, last CrossConnections kept, others untouched
        before = cluster.xcs()["good-client-firewall"]
        chain = cluster.chain("good")
        broken = copy.deepcopy(chain["spec"])
        broken["functions"][0]["interfaces"] = ["eth1", "eth1"]
        cluster.merge(cluster.chain_path("good"), {"spec": broken})
        eventually(lambda: condition(cluster.chain("good"), "Degraded") == ("True", "InvalidSpec"))
        status = cluster.chain("good")["status"]
        assert status["observedGeneration"] == chain["metadata"]["generation"] + 1
        message = next(c["message"] for c in status["conditions"] if c["type"] == "Ready")
        assert "spec.functions[0].interfaces: 'eth1' is listed 2 times" in message
        cluster.create_pod("fw-1", "firewall")
        cluster.create_pod("client-b1", "client-b")  # the overlap chain is still followed
        eventually(lambda: len(endpoints(cluster.xcs()["overlap-client-firewall"], "a")) == 2)
        assert cluster.xcs()["good-client-firewall"]["spec"] == before["spec"]
        # fixing the spec resumes reconciliation
        cluster.merge(cluster.chain_path("good"), {"spec": chain["spec"]})
        eventually(lambda: len(endpoints(cluster.xcs()["good-client-firewall"], "b")) == 2)
        eventually(lambda: condition(cluster.chain("good"), "Degraded") == ("False", "AsExpected"))


def test_deleting_a_chain_or_a_link_removes_crossconnections(cluster: Cluster) -> None:
    cluster.create_pod("fw-0", "firewall")
    cluster.create_chain(chain_body("web"))
    cluster.create_chain(chain_body("other"))
    with running(Controller(controller_config(cluster.apiserver, cluster.ns))):
        eventually(lambda: len(cluster.xcs()) == 4)
        chain = cluster.chain("web")
        spec = copy.deepcopy(chain["spec"])
        spec["links"] = spec["links"][:1]
        cluster.merge(cluster.chain_path("web"), {"spec": spec})
        eventually(lambda: "web-firewall-server" not in cluster.xcs())
        assert "web-client-firewall" in cluster.xcs()
        eventually(lambda: "firewall-server" not in cluster.chain("web")["status"]["links"])
        cluster.request("DELETE", cluster.chain_path("web"))
        eventually(
            lambda: sorted(cluster.xcs()) == ["other-client-firewall", "other-firewall-server"]
        )


def test_restart_makes_no_duplicates_and_no_spurious_writes(cluster: Cluster) -> None:
    for name, app in [("client-0", "client"), ("fw-0", "firewall"), ("server-0", "server")]:
        cluster.create_pod(name, app)
    cluster.create_chain(chain_body())
    config = controller_config(cluster.apiserver, cluster.ns, require_programmed=False)
    first = Controller(config)
    with running(first):
        eventually(lambda: condition(cluster.chain("web"), "Ready") == ("True", "ChainReady"))
    before = {name: xc["metadata"]["resourceVersion"] for name, xc in cluster.xcs().items()}
    chain_rv = cluster.chain("web")["metadata"]["resourceVersion"]
    # while the controller is down, a replica goes away for good
    cluster.delete_pod("fw-0", grace=0)
    cluster.create_pod("fw-1", "firewall")
    second = Controller(config)
    with running(second):
        eventually(
            lambda: endpoints(cluster.xcs()["web-client-firewall"], "b") == [("fw-1", "active")]
        )
        eventually(lambda: second.stats["reconcile"] > 0)
    assert sorted(cluster.xcs()) == sorted(before)
    assert second.stats["xc_create"] == 0
    third = Controller(config)
    with running(third):
        eventually(lambda: third.stats["reconcile"] > 0)
    after = {name: xc["metadata"]["resourceVersion"] for name, xc in cluster.xcs().items()}
    assert (third.stats["xc_create"], third.stats["xc_patch"]) == (0, 0)
    assert third.stats["status_patch"] == 0
    assert after != before  # the second controller did update the endpoints
    # same figures and conditions (one firewall replica replaced another): status untouched
    assert cluster.chain("web")["metadata"]["resourceVersion"] == chain_rv


def test_name_conflict_is_reported_and_events_are_posted(cluster: Cluster) -> None:
    for name, app in [("client-0", "client"), ("fw-0", "firewall"), ("server-0", "server")]:
        cluster.create_pod(name, app)
    cluster.create_pod("client-9", "client-other")
    cluster.create_pod("fw-9", "firewall-other")
    cluster.create_chain(chain_body("web"))
    clashing = chain_body(
        "web-client"
    )  # its link "firewall" -> CrossConnection web-client-firewall
    clashing["spec"]["functions"] = clashing["spec"]["functions"][:2]
    for fn in clashing["spec"]["functions"]:  # pods of its own: only the name clashes
        fn["selector"]["matchLabels"]["app"] += "-other"
    clashing["spec"]["links"] = [{**clashing["spec"]["links"][0], "name": "firewall"}]
    with running(Controller(controller_config(cluster.apiserver, cluster.ns))):
        eventually(lambda: "web-client-firewall" in cluster.xcs())
        cluster.create_chain(clashing)
        eventually(
            lambda: condition(cluster.chain("web-client"), "Degraded") == ("True", "NameConflict")
        )
        message = next(
            c["message"]
            for c in cluster.chain("web-client")["status"]["conditions"]
            if c["type"] == "Degraded"
        )
        assert message == (
            "CrossConnection 'web-client-firewall' already exists for chain 'web'; "
            "rename this chain or the link"
        )
        assert cluster.xcs()["web-client-firewall"]["spec"]["chain"] == "web"

        def events() -> set[tuple[str, str, str]]:
            items = cluster.get(f"/api/v1/namespaces/{cluster.ns}/events")["items"]
            return {
                (e["involvedObject"]["name"], e["type"], e["reason"])
                for e in items
                if e["involvedObject"].get("kind") == "ServiceFunctionChain"
            }

        eventually(lambda: ("web-client", "Warning", "NameConflict") in events())
        assert ("web", "Normal", "CrossConnectionCreated") in events()
        assert condition(cluster.chain("web"), "Degraded") == ("False", "AsExpected")


def test_a_pod_interface_stays_with_the_older_chain(cluster: Cluster) -> None:
    for name, app in [("client-0", "client"), ("fw-0", "firewall"), ("server-0", "server")]:
        cluster.create_pod(name, app)
    cluster.create_chain(chain_body("first"))
    with running(Controller(controller_config(cluster.apiserver, cluster.ns))):
        eventually(lambda: endpoints(cluster.xcs()["first-client-firewall"], "b"))
        cluster.create_chain(chain_body("second"))  # same selectors, same interfaces
        eventually(
            lambda: condition(cluster.chain("second"), "Degraded") == ("True", "InterfaceConflict")
        )
        assert endpoints(cluster.xcs()["second-client-firewall"], "b") == []
        assert endpoints(cluster.xcs()["first-client-firewall"], "b") == [("fw-0", "active")]
        assert condition(cluster.chain("first"), "Degraded") == ("False", "AsExpected")
        # the older chain goes away: the younger one takes the pods over
        cluster.request("DELETE", cluster.chain_path("first"))
        eventually(
            lambda: endpoints(cluster.xcs()["second-client-firewall"], "b") == [("fw-0", "active")]
        )
        eventually(lambda: condition(cluster.chain("second"), "Degraded")[0] == "False")


def test_scaling_a_deployment_with_kubectl_moves_the_endpoints(cluster: Cluster) -> None:
    cluster.ensure_node("node-1")
    for name, app in [("client-0", "client"), ("server-0", "server")]:
        cluster.create_pod(name, app)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "firewall", "namespace": cluster.ns},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "firewall"}},
            "template": {
                "metadata": {"labels": {"app": "firewall"}},
                "spec": {
                    "terminationGracePeriodSeconds": 30,
                    "containers": [{"name": "nf", "image": "nf"}],
                },
            },
        },
    }
    cluster.request("POST", f"/apis/apps/v1/namespaces/{cluster.ns}/deployments", deployment)
    cluster.create_chain(chain_body())

    def replicas() -> list[dict[str, Any]]:
        items = cluster.get(cluster.pod_path() + "?labelSelector=app%3Dfirewall")["items"]
        return sorted(items, key=lambda p: p["metadata"]["name"])

    def make_ready() -> list[str]:
        """The kubelet's part: every scheduled, running replica passes its readiness probe."""
        names = []
        for pod in replicas():
            if pod["metadata"].get("deletionTimestamp"):
                continue
            if pod.get("spec", {}).get("nodeName"):
                cluster.set_ready(pod["metadata"]["name"], True)
            names.append(pod["metadata"]["name"])
        return sorted(names)

    def firewall_side() -> list[tuple[str, str]]:
        return endpoints(cluster.xcs()["web-client-firewall"], "b")

    with running(Controller(controller_config(cluster.apiserver, cluster.ns))):
        names = eventually(lambda: len(make_ready()) == 2 and make_ready())
        eventually(lambda: firewall_side() == [(n, "active") for n in names])
        cluster.apiserver.kubectl(
            "scale", "deployment/firewall", "--replicas=3", "-n", cluster.ns, check=True
        )
        names = eventually(lambda: len(make_ready()) == 3 and make_ready())
        eventually(lambda: firewall_side() == [(n, "active") for n in names])
        cluster.apiserver.kubectl(
            "scale", "deployment/firewall", "--replicas=1", "-n", cluster.ns, check=True
        )
        # the two replicas scaled away drain while they terminate, the kept one stays active
        eventually(
            lambda: (
                sorted(state for _, state in firewall_side()) == ["active", "draining", "draining"]
            )
        )
        for pod in replicas():
            if pod["metadata"].get("deletionTimestamp"):
                cluster.delete_pod(pod["metadata"]["name"], grace=0)  # the kubelet confirms
        eventually(lambda: [state for _, state in firewall_side()] == ["active"])
        eventually(
            lambda: (
                cluster.chain("web")["status"]["functions"]["firewall"]
                == {"replicas": 1, "readyReplicas": 1, "readyReplicasByNode": {"node-1": 1}}
            )
        )


def test_links_reconciled_at_once_get_distinct_cluster_ids_that_stay(cluster: Cluster) -> None:
    # Every chain is reconciled as its own task: their CrossConnection writes overlap, and no
    # watch event of one is back before the next picks an id (ClusterIdBook).
    for name, app in [("client-0", "client"), ("fw-0", "firewall"), ("server-0", "server")]:
        cluster.create_pod(name, app)
    names = [f"c{i}" for i in range(8)]
    for name in names:
        cluster.create_chain(chain_body(name))
    with running(Controller(controller_config(cluster.apiserver, cluster.ns))):
        xcs = eventually(lambda: len(cluster.xcs()) == 2 * len(names) and cluster.xcs())
        ids = {name: xc["spec"]["clusterId"] for name, xc in xcs.items()}
        assert len(set(ids.values())) == len(ids), ids
        cluster.create_pod("fw-1", "firewall")  # every chain is reconciled again
        eventually(lambda: len(endpoints(cluster.xcs()["c0-client-firewall"], "b")) == 2)
        assert {name: xc["spec"]["clusterId"] for name, xc in cluster.xcs().items()} == ids
