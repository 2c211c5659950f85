"""What one event costs the controller does not grow with the number of chains present.

The controller runs for real (Kopf via KopfRunner) against the local API server. With K chains
converged, then with 4K, the same kind of event is measured: a new Ready replica of one chain
(a pod event and that chain's reconcile), and a new chain (its reconcile, its new links' cluster
ids). Counted, not timed (timings belong in bench/control_plane.py):
- the label selectors evaluated (``LabelSelector.matches``): a pod event that looked at every
  chain of the namespace, or a reconcile that checked every chain as a contender, grows with K;
- the cluster ids tested for a new link (``_ClusterIdsInUse.__contains__``): a search for the
  lowest free id from 1 tests one id per existing link;
- the API requests the event causes, by verb and resource (the server's ``/metrics``): no list,
  and no more requests with 4K chains than with K.
The counters wrap the real methods (they call through); nothing is replaced.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sfc_k8s.api.models import LabelSelector
from sfc_k8s.local.apiserver import requestmetrics
from sfc_k8s.operator import controller as controller_module
from sfc_k8s.operator.controller import Controller
from tests.fixtures.controller import Cluster, controller_config, eventually, running

K = 5


class Calls:
    """How often some methods were called (thread-safe: Kopf runs in its own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def wrap(self, monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> None:
        original = getattr(owner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.counts[name] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Calls]:
    counter = Calls()
    counter.wrap(monkeypatch, LabelSelector, "matches")
    counter.wrap(monkeypatch, controller_module._ClusterIdsInUse, "__contains__")
    yield counter


def chain(name: str) -> dict[str, Any]:
    functions = [
        {"name": fn, "selector": {"matchLabels": {"app": f"{name}-{fn}"}}, "interfaces": ["eth1"]}
        for fn in ("a", "b")
    ]
    link = {"name": "l", "a": {"function": "a", "interface": "eth1"}}
    link["b"] = {"function": "b", "interface": "eth1"}
    return {
        "apiVersion": "sfc-k8s.io/v1alpha1",
        "kind": "ServiceFunctionChain",
        "metadata": {"name": name},
        "spec": {"functions": functions, "links": [link]},
    }


def add_chains(cluster: Cluster, first: int, last: int) -> None:
    for i in range(first, last):
        add_chain(cluster, f"c{i:03d}")


def endpoints_of(cluster: Cluster, name: str) -> int:
    xc = cluster.find(cluster.xc_path(f"{name}-l"))
    return 0 if xc is None else len(xc["spec"]["a"]["endpoints"] + xc["spec"]["b"]["endpoints"])


def converged(cluster: Cluster, chains: int) -> bool:
    """Every chain cNNN has its CrossConnection with (at least) its first two replicas."""
    return all(endpoints_of(cluster, f"c{i:03d}") >= 2 for i in range(chains))


def requests(cluster: Cluster) -> Counter[tuple[str, ...]]:
    url = cluster.apiserver.url + requestmetrics.METRICS_PATH
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    counts = requestmetrics.parse(text).get("apiserver_request_total", Counter())
    by_verb: Counter[tuple[str, ...]] = Counter()
    for (verb, _group, resource, sub, _code), n in counts.items():
        by_verb[(verb, resource, sub)] += n
    return by_verb


def measured(
    cluster: Cluster,
    controller: Controller,
    calls: Calls,
    act: Callable[[], Any],
    done: Callable[[], bool],
) -> tuple[Counter[str], Counter[tuple[str, ...]], int]:
    """Counters, requests and reconciles of ``act`` until ``done`` and quiet again."""
    quiet(controller, calls)
    calls_before, requests_before = calls.snapshot(), requests(cluster)
    reconciles = controller.stats["reconcile"]
    act()
    eventually(done)
    quiet(controller, calls)
    spent = calls.snapshot() - calls_before
    return spent, requests(cluster) - requests_before, controller.stats["reconcile"] - reconciles


def quiet(controller: Controller, calls: Calls) -> None:
    """Wait until the controller has done nothing for half a second (echoes of its writes)."""

    def unchanged() -> bool:
        before = (calls.snapshot(), dict(controller.stats))
        time.sleep(0.5)
        return before == (calls.snapshot(), dict(controller.stats))

    eventually(unchanged, timeout=20)


def test_an_event_costs_the_same_with_four_times_the_chains(cluster: Cluster, calls: Calls) -> None:
    controller = Controller(controller_config(cluster.apiserver, cluster.ns, peering=None))
    add_chains(cluster, 0, K)
    costs = {}
    with running(controller):
        for present in (K, 4 * K):
            if present > K:
                add_chains(cluster, K, present)
            eventually(lambda: converged(cluster, present), timeout=30)  # noqa: B023
            # a pod no chain selects: the event must not go through the chains
            stray = f"stray-{present}"
            costs[("stray", present)] = measured(
                cluster,
                controller,
                calls,
                lambda: cluster.create_pod(stray, "nobody", ready=False),  # noqa: B023
                lambda: controller._selections.knows((cluster.ns, stray)),  # noqa: B023
            )
            # a new chain: its links' cluster ids, its pods' events, its reconciles
            new = f"n{present:03d}"
            costs[("chain", present)] = measured(
                cluster,
                controller,
                calls,
                lambda: add_chain(cluster, new),  # noqa: B023
                lambda: endpoints_of(cluster, new) == 2,  # noqa: B023
            )
            # one more replica of an existing chain
            name = f"c{present // K - 1:03d}"
            costs[("replica", present)] = measured(
                cluster,
                controller,
                calls,
                lambda: cluster.create_pod(f"{name}-b-1", f"{name}-b"),  # noqa: B023
                lambda: endpoints_of(cluster, name) == 3,  # noqa: B023
            )
    small, large = costs[("stray", K)], costs[("stray", 4 * K)]
    assert small[0]["matches"] == large[0]["matches"] == 0, (small, large)
    for event in ("chain", "replica"):
        (calls_k, requests_k, reconciles_k) = costs[(event, K)]
        (calls_4k, requests_4k, reconciles_4k) = costs[(event, 4 * K)]
        # per reconcile of the chain (their number varies with the timing of the echoes)
        for name, slack in (("matches", 1.25), ("__contains__", 1.0)):
            per_k = calls_k[name] / max(reconciles_k, 1)
            per_4k = calls_4k[name] / max(reconciles_4k, 1)
            assert per_4k <= per_k * slack + 1, (event, name, costs)
        assert not [key for key in requests_4k if key[0] == "list"], requests_4k
        assert sum(requests_4k.values()) <= sum(requests_k.values()) + 3, (event, costs)


def add_chain(cluster: Cluster, name: str) -> None:
    cluster.create_pod(f"{name}-a-0", f"{name}-a")
    cluster.create_pod(f"{name}-b-0", f"{name}-b")
    cluster.create_chain(chain(name))
