"""When the namespace controller deletes a terminating namespace's contents.

Covers: an active namespace is never due; a namespace that turned Terminating just now keeps
its contents (so `kubectl delete -f DIR/` with the namespace first still finds them); one
terminating for ``NAMESPACE_CONTENT_DELAY`` is due; a malformed timestamp is not.
"""

from __future__ import annotations

import datetime

from sfc_k8s.local.apiserver.controllers import NAMESPACE_CONTENT_DELAY, contents_due

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def _ns(deleted: str | None) -> dict[str, object]:
    meta: dict[str, object] = {"name": "demo"}
    if deleted is not None:
        meta["deletionTimestamp"] = deleted
    return {"metadata": meta}


def _ago(seconds: float) -> str:
    return (NOW - datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_an_active_namespace_is_never_due() -> None:
    assert not contents_due(_ns(None), NOW)


def test_contents_wait_for_the_delay_then_go() -> None:
    assert not contents_due(_ns(_ago(0)), NOW)
    assert not contents_due(_ns(_ago(NAMESPACE_CONTENT_DELAY - 1)), NOW)
    assert contents_due(_ns(_ago(NAMESPACE_CONTENT_DELAY)), NOW)
    assert contents_due(_ns(_ago(NAMESPACE_CONTENT_DELAY + 60)), NOW)


def test_a_malformed_timestamp_is_not_due() -> None:
    assert not contents_due(_ns("yesterday"), NOW)
