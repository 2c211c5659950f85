"""RFC 3339 timestamps as the Kubernetes API writes and reads them.

One place for the format every part of sfc-k8s writes (``creationTimestamp``, condition
transitions, events, lease renewals, the agent's ``lastUpdate``) and for reading one back. Pure:
used by ``api`` itself, the operator and the local cluster (API server, node runtime, tables).
"""

from __future__ import annotations

import datetime
from typing import Any

_SECONDS = "%Y-%m-%dT%H:%M:%SZ"
_MICROSECONDS = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_rfc3339(when: datetime.datetime, *, micro: bool = False) -> str:
    """``when`` in UTC with a ``Z``; second precision unless ``micro`` (a ``MicroTime``)."""
    return when.astimezone(datetime.UTC).strftime(_MICROSECONDS if micro else _SECONDS)


def now_rfc3339(offset_seconds: float = 0, *, micro: bool = False) -> str:
    """The current time (plus ``offset_seconds``) as ``format_rfc3339`` writes it."""
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=offset_seconds)
    return format_rfc3339(moment, micro=micro)


def parse_rfc3339(text: Any) -> datetime.datetime | None:
    """A timestamp of the API (seconds or fractions, ``Z`` or an offset), timezone-aware; None
    for anything else (a missing field, a malformed value). A time without zone is UTC."""
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)
