"""The CNI plugin's error type and the error codes it reports.

Every failure of ``sfc-cni`` ends up as one ``CniError``, which ``plugin.main`` prints as the CNI
spec's error object (``{"cniVersion", "code", "msg", "details"}``) on stdout before exiting
non-zero. Codes below 100 are the spec's well-known ones; 100 and above are this plugin's own.

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
