"""Which pods each chain selected at its last reconcile, for the controller's pod events.

A pod event must reconcile the chains that select the pod now (found from the chains' specs)
and also those that selected it before (its labels changed, it was deleted): Kopf's index holds
only the pod's current labels, so the controller keeps the second half here. It also keeps the
last ``PodInfo`` of each pod, so that events changing nothing the controller reads (container
statuses, resource versions) are dropped before any work. Called by
``sfc_k8s.operator.controller``; pure, unit-tested in ``tests/unit/operator/test_selections.py``.
"""

from __future__ import annotations

from collections.abc import Iterable

from sfc_k8s.api import PodInfo

ChainKey = tuple[str, str]  # (namespace, name)
PodKey = tuple[str, str]  # (namespace, name)


class Selections:
    """Chain -> pods selected at its last reconcile, pod -> those chains, pod -> last PodInfo."""

    def __init__(self) -> None:
        self._pods: dict[ChainKey, set[PodKey]] = {}
        self._chains: dict[PodKey, set[ChainKey]] = {}
        self._seen: dict[PodKey, PodInfo] = {}

    def record(self, chain: ChainKey, pods: Iterable[PodKey]) -> None:
        """``chain`` selects ``pods`` now (at the end of its reconcile)."""
        current = set(pods)
        before = self._pods.get(chain, set())
        for pod in before - current:
            self._chains.get(pod, set()).discard(chain)
        for pod in current - before:
            self._chains.setdefault(pod, set()).add(chain)
        self._pods[chain] = current

    def pods_of(self, chain: ChainKey) -> set[PodKey]:
        return set(self._pods.get(chain, ()))

    def chains_of(self, pod: PodKey) -> set[ChainKey]:
        return set(self._chains.get(pod, ()))

    def sharing(self, chain: ChainKey, pods: Iterable[PodKey] | None = None) -> set[ChainKey]:
        """Other chains that selected one of ``pods`` (by default ``chain``'s own) last time."""
        found: set[ChainKey] = set()
        for pod in self._pods.get(chain, set()) if pods is None else pods:
            found |= self._chains.get(pod, set())
        found.discard(chain)
        return found

    def forget_chain(self, chain: ChainKey) -> set[PodKey]:
        """The chain is gone; returns the pods it selected."""
        pods = self._pods.pop(chain, set())
        for pod in pods:
            self._chains.get(pod, set()).discard(chain)
        return pods

    def knows(self, pod: PodKey) -> bool:
        """Whether an event of ``pod`` was seen (and not its deletion)."""
        return pod in self._seen

    def pod_changed(self, info: PodInfo) -> bool:
        """Record ``info``; False if it equals the last one recorded for that pod."""
        if self._seen.get(info.key) == info:
            return False
        self._seen[info.key] = info
        return True

    def pod_deleted(self, pod: PodKey) -> set[ChainKey]:
        """The pod is gone; returns the chains that selected it at their last reconcile."""
        self._seen.pop(pod, None)
        return self._chains.pop(pod, set())


__all__ = ["ChainKey", "PodKey", "Selections"]
