"""The one RFC 3339 helper and the one readiness check every part of sfc-k8s calls.

Covers: seconds and microsecond formats in UTC from any zone, the current time with an offset,
parsing ``Z``, offsets, fractions and zone-less times (as UTC), None for missing or malformed
values; a pod or node is Ready only with a ``Ready`` condition whose status is ``"True"``.
"""

from __future__ import annotations

import datetime

import pytest

from sfc_k8s.api.conditions import is_ready, object_condition
from sfc_k8s.api.timestamps import format_rfc3339, now_rfc3339, parse_rfc3339

CEST = datetime.timezone(datetime.timedelta(hours=2))


def test_format_is_utc_with_a_z_in_seconds_or_microseconds() -> None:
    when = datetime.datetime(2026, 3, 1, 14, 5, 9, 123456, tzinfo=CEST)
    assert format_rfc3339(when) == "2026-03-01T12:05:09Z"
    assert format_rfc3339(when, micro=True) == "2026-03-01T12:05:09.123456Z"


def test_now_with_an_offset_round_trips() -> None:
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    later = parse_rfc3339(now_rfc3339(30))
    assert later is not None
    assert 29 <= (later - before).total_seconds() <= 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T12:05:09Z", datetime.datetime(2026, 3, 1, 12, 5, 9, tzinfo=datetime.UTC)),
        ("2026-03-01T14:05:09+02:00", datetime.datetime(2026, 3, 1, 12, 5, 9, tzinfo=datetime.UTC)),
        (
            "2026-03-01T12:05:09.5Z",
            datetime.datetime(2026, 3, 1, 12, 5, 9, 500000, tzinfo=datetime.UTC),
        ),
        ("2026-03-01T12:05:09", datetime.datetime(2026, 3, 1, 12, 5, 9, tzinfo=datetime.UTC)),
        ("yesterday", None),
        ("", None),
        (None, None),
        (1234, None),
    ],
)
def test_parse(text: object, expected: datetime.datetime | None) -> None:
    parsed = parse_rfc3339(text)
    assert parsed == expected
    assert parsed is None or parsed.tzinfo is not None


def _with(*conditions: dict[str, str]) -> dict[str, object]:
    return {"status": {"conditions": list(conditions)}}


@pytest.mark.parametrize(
    ("obj", "ready"),
    [
        (_with({"type": "Ready", "status": "True"}), True),
        (
            _with({"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}),
            True,
        ),
        (_with({"type": "Ready", "status": "False"}), False),
        (_with({"type": "Ready", "status": "Unknown"}), False),
        (_with({"type": "ContainersReady", "status": "True"}), False),
        ({"status": {}}, False),
        ({}, False),
    ],
)
def test_ready_needs_a_true_ready_condition(obj: dict[str, object], ready: bool) -> None:
    assert is_ready(obj) is ready


def test_object_condition_finds_the_entry_by_type() -> None:
    obj = _with({"type": "Ready", "status": "False", "reason": "KubeletNotReady"})
    assert object_condition(obj, "Ready") == obj["status"]["conditions"][0]  # type: ignore[index]
    assert object_condition(obj, "MemoryPressure") is None
