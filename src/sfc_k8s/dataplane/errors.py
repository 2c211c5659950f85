"""Exceptions of the data plane boundary (the eBPF maps, programs and attachments).

Every error the data plane raises derives from ``DataplaneError``; callers (the ``dp`` CLI,
the node agent) branch on the class, and on ``errno`` for ``BpfError``, never on the text.
"""

from __future__ import annotations


class DataplaneError(Exception):
    """Base of every data plane error."""


class BpfError(DataplaneError):
    """A libbpf or bpf(2) call failed; ``errno`` tells why."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


class LinkNotFound(DataplaneError):  # noqa: N818 (the contract names)
    """No cross-connection of that name is pinned under the root."""


class LinkExists(DataplaneError):  # noqa: N818 (the contract names)
    """A cross-connection of that name already exists."""


class InvalidName(DataplaneError):  # noqa: N818 (the contract names)
    """A link name that cannot be a bpffs folder name."""


class InterfaceNotFound(DataplaneError):  # noqa: N818 (the contract names)
    """The named interface does not exist in this network namespace."""


class EndpointExists(DataplaneError):  # noqa: N818 (the contract names)
    """The interface is already an endpoint of this or another link."""


class EndpointNotFound(DataplaneError):  # noqa: N818 (the contract names)
    """The interface is not an endpoint of that side of that link."""


class CapacityError(DataplaneError):
    """Too many endpoints on one side, too many interfaces, or too many links."""


class InvalidValue(DataplaneError):  # noqa: N818 (the contract names)
    """An id, address or setting outside its range or form (the message names which)."""
