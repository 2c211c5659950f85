"""The CNI plugin's error type and the error codes it reports.

Every failure of ``sfc-cni`` ends up as one ``CniError``, which ``plugin.main`` prints as the CNI
spec's error object (``{"cniVersion", "code", "msg", "details"}``) on stdout before exiting
non-zero. Codes below 100 are the spec's well-known ones; 100 and above are this plugin's own.

Bad input (a ``CNI_*`` variable, a config key, a field of a result) is reported with
``invalid``: the field, the value given and the expected form, and nothing else.

Plain ``int`` constants instead of an ``IntEnum``: ``enum`` costs milliseconds to import and this
module is on the ADD hot path (see docs/cni.md).
"""

from __future__ import annotations


class Code:
    """Error codes: the spec's well-known ones (< 100) and sfc-cni's own (>= 100)."""

    INCOMPATIBLE_VERSION = 1
    UNSUPPORTED_FIELD = 2
    UNKNOWN_CONTAINER = 3
    INVALID_ENVIRONMENT = 4
    IO_FAILURE = 5
    DECODING_FAILURE = 6
    INVALID_CONFIG = 7
    TRY_AGAIN_LATER = 11
    NOT_AVAILABLE = 50
    NOT_AVAILABLE_LIMITED = 51
    # sfc-cni's own codes.
    NETLINK_FAILURE = 100
    INTERFACE_EXISTS = 101
    IPAM_FAILURE = 102
    CHECK_MISMATCH = 103
    INTERNAL = 199


class CniError(Exception):
    """A failure reported to the runtime as a CNI error object.

    ``msg`` says what went wrong in a way that tells the operator what to fix; ``details`` adds
    context (an errno string, the delegate's output) and may be empty.
    """

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_dict(self, cni_version: str) -> dict[str, object]:
        body: dict[str, object] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            body["details"] = self.details
        return body


class _Missing:
    """The value of a field that is absent (``MISSING``), told apart from JSON ``null``."""

    __slots__ = ()


MISSING = _Missing()
_SHOWN_MAX = 80  # a value longer than this (a whole ipam section, say) is cut


def show(value: object) -> str:
    """``value`` as the user wrote it: JSON (``true``, ``"1500"``, ``null``), cut when long."""
    from sfc_k8s.coldstart import json_dumps

    try:
        text = json_dumps(value)
    except TypeError:  # not JSON-encodable: never from parsed input
        text = str(value)
    return text if len(text) <= _SHOWN_MAX else text[: _SHOWN_MAX - 3] + "..."


def invalid(
    field: str, value: object, expected: str, *, code: int = Code.INVALID_CONFIG, details: str = ""
) -> CniError:
    """The error for a bad input ``field``: its name, the value given, and what is expected.

    Every validation of the environment and the config phrases its error with this, so a user
    reads ``mtu=10: expected an integer from 68 to 65535`` or ``name is missing: expected ...``
    and nothing else (no parser's internals; those, if useful, go to ``details``).
    """
    given = f"{field} is missing" if value is MISSING else f"{field}={show(value)}"
    return CniError(code, f"{given}: expected {expected}", details)
