"""Errors raised by the pure API layer (parsing and validating chain and cross-connection bodies).

Callers (the controller, the node agent, tests) branch on the exception type; the ``problems``
tuple lists every problem found, each phrased as what to fix, so a status condition can show them
all at once instead of one per edit.
"""

from __future__ import annotations


class InvalidObjectError(Exception):
    """An object body does not describe a valid resource; ``problems`` says what to fix.

    The base of every error ``sfc_k8s.api`` raises (it does no I/O, so bad input is its only
    failure). Errors of the Kubernetes API server itself are ``sfc_k8s.kube``'s.
    """

    kind = "object"

    def __init__(self, name: str, problems: list[str] | tuple[str, ...]) -> None:
        self.name = name
        self.problems = tuple(problems)
        listed = "; ".join(self.problems)
        super().__init__(f"{self.kind} {name!r} is invalid: {listed}")


class ChainInvalid(InvalidObjectError):  # noqa: N818 (name shared with the other engineers)
    """A ServiceFunctionChain spec is invalid (schema-level or semantic problems)."""

    kind = "ServiceFunctionChain"


class CrossConnectionInvalid(InvalidObjectError):  # noqa: N818 (pairs with ChainInvalid)
    """A CrossConnection body is malformed (the agent refuses to program it)."""

    kind = "CrossConnection"
