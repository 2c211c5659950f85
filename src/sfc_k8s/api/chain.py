"""Parsing and static validation of ServiceFunctionChain bodies.

``parse_chain`` is the single entry point the controller calls on every chain event: it returns a
``ChainSpec`` or raises ``ChainInvalid`` listing every problem (each phrased as what to fix), so
that one status condition tells the user everything at once. The CRD's OpenAPI schema and CEL
rules reject most of these problems at admission already; this module repeats the checks because
the controller must never act on a body it does not understand (older CRD installed, a server that
does not evaluate CEL, objects written before a rule existed), and it adds checks CEL cannot do
well (name lengths of derived objects).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from sfc_k8s.api.autoscaling import parse_autoscaling
from sfc_k8s.api.errors import ChainInvalid
from sfc_k8s.api.models import (
    DNS_LABEL_MAX,
    DNS_SUBDOMAIN_MAX,
    IFNAME_MAX,
    LABEL_VALUE_MAX,
    ChainSpec,
    DataplaneSpec,
    FunctionSpec,
    LabelSelector,
    LinkEnd,
    LinkSpec,
    SelectorOperator,
    SelectorRequirement,
    xc_name,
)

DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
IFNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
LABEL_NAME_RE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
LABEL_PREFIX_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

MAX_DRAIN_TIMEOUT_SECONDS = 3600


def is_dns_label(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) <= DNS_LABEL_MAX
        and DNS_LABEL_RE.fullmatch(value) is not None
    )


def is_ifname(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) <= IFNAME_MAX
        and IFNAME_RE.fullmatch(value) is not None
    )


def is_label_key(value: object) -> bool:
    if not isinstance(value, str) or not value:
        return False
    prefix, _, name = value.rpartition("/")
    if "/" in value and (not prefix or len(prefix) > DNS_SUBDOMAIN_MAX):
        return False
    if prefix and LABEL_PREFIX_RE.fullmatch(prefix) is None:
        return False
    return 0 < len(name) <= DNS_LABEL_MAX and LABEL_NAME_RE.fullmatch(name) is not None


def is_label_value(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) <= LABEL_VALUE_MAX
        and LABEL_NAME_RE.fullmatch(value) is not None
    )


class Problems:
    """Collects problems with their location (``spec.links[1].a.function: ...``); shared with
    the CrossConnection parser."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")


def parse_selector(raw: object, where: str, problems: Problems) -> LabelSelector:
    """Parse a LabelSelector body; problems are added to ``problems``."""
    if not isinstance(raw, Mapping):
        problems.add(where, "must be a label selector object (matchLabels/matchExpressions)")
        return LabelSelector()
    labels = _parse_match_labels(raw.get("matchLabels") or {}, where, problems)
    requirements: list[SelectorRequirement] = []
    raw_exprs = raw.get("matchExpressions") or []
    if not isinstance(raw_exprs, list):
        problems.add(f"{where}.matchExpressions", "must be a list of requirements")
        raw_exprs = []
    for i, expr in enumerate(raw_exprs):
        requirement = _parse_requirement(expr, f"{where}.matchExpressions[{i}]", problems)
        if requirement is not None:
            requirements.append(requirement)
    selector = LabelSelector(tuple(labels), tuple(requirements))
    if not labels and not requirements and not problems.items:
        problems.add(where, "is empty and would select every pod of the namespace; add matchLabels")
    return selector


def _parse_match_labels(raw: object, where: str, problems: Problems) -> list[tuple[str, str]]:
    if not isinstance(raw, Mapping):
        problems.add(f"{where}.matchLabels", "must map label keys to values")
        return []
    labels: list[tuple[str, str]] = []
    for key, value in sorted(raw.items()):
        if not is_label_key(key):
            problems.add(f"{where}.matchLabels", f"{key!r} is not a valid label key")
        elif not is_label_value(value):
            problems.add(f"{where}.matchLabels.{key}", f"{value!r} is not a valid label value")
        else:
            labels.append((key, value))
    return labels


def _parse_requirement(expr: object, at: str, problems: Problems) -> SelectorRequirement | None:
    if not isinstance(expr, Mapping):
        problems.add(at, "must be an object with key, operator and values")
        return None
    key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    valid = True
    if not is_label_key(key):
        problems.add(f"{at}.key", f"{key!r} is not a valid label key")
        valid = False
    try:
        operator = SelectorOperator(str(op))
    except ValueError:
        choices = ", ".join(o.value for o in SelectorOperator)
        problems.add(f"{at}.operator", f"{op!r} is not one of {choices}")
        return None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        problems.add(f"{at}.values", "must be a list of strings")
        return None
    if operator in (SelectorOperator.IN, SelectorOperator.NOT_IN) and not values:
        problems.add(f"{at}.values", f"operator {operator} needs at least one value")
        valid = False
    if operator in (SelectorOperator.EXISTS, SelectorOperator.DOES_NOT_EXIST) and values:
        problems.add(f"{at}.values", f"operator {operator} takes no values; remove them")
        valid = False
    if valid and isinstance(key, str):
        return SelectorRequirement(key, operator, tuple(sorted(set(values))))
    return None


def _check_name(item: Mapping[str, Any], at: str, problems: Problems) -> object:
    """The item's ``name``, reported unless it is a DNS label."""
    name = item.get("name")
    if not is_dns_label(name):
        problems.add(
            f"{at}.name",
            f"{name!r} is not a DNS label (lowercase letters, digits, '-', at most 63)",
        )
    return name


def _parse_functions(raw: object, problems: Problems) -> list[FunctionSpec]:
    if not isinstance(raw, list) or not raw:
        problems.add("spec.functions", "must list at least one function")
        return []
    functions: list[FunctionSpec] = []
    for i, item in enumerate(raw):
        at = f"spec.functions[{i}]"
        if not isinstance(item, Mapping):
            problems.add(at, "must be an object with name, selector and interfaces")
            continue
        name = _check_name(item, at, problems)
        sel_problems = Problems()
        selector = parse_selector(item.get("selector"), f"{at}.selector", sel_problems)
        problems.items += sel_problems.items
        ifnames = _parse_interfaces(item.get("interfaces"), at, problems)
        autoscaling, found = parse_autoscaling(item.get("autoscaling"), f"{at}.autoscaling")
        problems.items += found
        if isinstance(name, str):
            interfaces = tuple(dict.fromkeys(ifnames))
            functions.append(FunctionSpec(name, selector, interfaces, autoscaling))
    for name, count in Counter(f.name for f in functions).items():
        if count > 1:
            problems.add("spec.functions", f"function name {name!r} is used {count} times")
    return functions


def _parse_interfaces(raw: object, at: str, problems: Problems) -> list[str]:
    """A function's ``interfaces``: the valid names, in order (duplicates reported)."""
    if not isinstance(raw, list) or not raw:
        problems.add(f"{at}.interfaces", "must list at least one data-plane interface")
        return []
    ifnames: list[str] = []
    for j, ifname in enumerate(raw):
        if not is_ifname(ifname):
            problems.add(
                f"{at}.interfaces[{j}]",
                f"{ifname!r} is not an interface name (letters, digits, '_', '.', '-', at most 15)",
            )
        else:
            ifnames.append(ifname)
    for ifname, count in Counter(ifnames).items():
        if count > 1:
            problems.add(f"{at}.interfaces", f"{ifname!r} is listed {count} times")
    return ifnames


def _parse_end(raw: object, at: str, problems: Problems) -> LinkEnd | None:
    if not isinstance(raw, Mapping):
        problems.add(at, "must be an object with function and interface")
        return None
    function, interface = raw.get("function"), raw.get("interface")
    if not isinstance(function, str) or not function:
        problems.add(f"{at}.function", "must name a function of the chain")
        return None
    if not isinstance(interface, str) or not interface:
        problems.add(f"{at}.interface", f"must name an interface of function {function!r}")
        return None
    return LinkEnd(function, interface)


def _check_end(
    end: LinkEnd, at: str, by_name: Mapping[str, FunctionSpec], problems: Problems
) -> None:
    """A link end names a function of the chain and one of its interfaces."""
    fn = by_name.get(end.function)
    if fn is None:
        known = ", ".join(sorted(by_name)) or "none"
        problems.add(f"{at}.function", f"no function named {end.function!r} (functions: {known})")
    elif end.interface not in fn.interfaces:
        problems.add(
            f"{at}.interface",
            f"function {end.function!r} has no interface {end.interface!r} "
            f"(interfaces: {', '.join(fn.interfaces) or 'none'})",
        )


def _parse_links(raw: object, functions: list[FunctionSpec], problems: Problems) -> list[LinkSpec]:
    if not isinstance(raw, list) or not raw:
        problems.add("spec.links", "must list at least one link between two functions")
        return []
    by_name = {f.name: f for f in functions}
    links: list[LinkSpec] = []
    users: dict[LinkEnd, list[str]] = {}
    for i, item in enumerate(raw):
        at = f"spec.links[{i}]"
        if not isinstance(item, Mapping):
            problems.add(at, "must be an object with name, a and b")
            continue
        name = _check_name(item, at, problems)
        ends = [_parse_end(item.get(s), f"{at}.{s}", problems) for s in ("a", "b")]
        for side, end in zip(("a", "b"), ends, strict=True):
            if end is None:
                continue
            _check_end(end, f"{at}.{side}", by_name, problems)
            users.setdefault(end, []).append(name if isinstance(name, str) else f"#{i}")
        a, b = ends
        if a is not None and b is not None and a.function == b.function:
            problems.add(
                at,
                f"links function {a.function!r} to itself; a link joins two different functions",
            )
        if isinstance(name, str) and a is not None and b is not None:
            links.append(LinkSpec(name, a, b))
    for end, names in users.items():
        if len(names) > 1:
            problems.add(
                "spec.links",
                f"interface {end} is used by links {', '.join(map(repr, names))}; "
                "an interface belongs to one link only",
            )
    for name, count in Counter(link.name for link in links).items():
        if count > 1:
            problems.add("spec.links", f"link name {name!r} is used {count} times")
    return links


def parse_dataplane(raw: object, problems: Problems) -> DataplaneSpec:
    """``spec.dataplane`` of a chain, or of a CrossConnection (the controller copies it)."""
    if raw is None:
        return DataplaneSpec()
    if not isinstance(raw, Mapping):
        problems.add("spec.dataplane", "must be an object")
        return DataplaneSpec()
    value = raw.get("drainTimeoutSeconds")
    if value is None:
        return DataplaneSpec()
    high = MAX_DRAIN_TIMEOUT_SECONDS
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        problems.add(
            "spec.dataplane.drainTimeoutSeconds",
            f"{value!r} must be an integer number of seconds in [0, {high}]",
        )
        return DataplaneSpec()
    return DataplaneSpec(drain_timeout_seconds=value)


def parse_chain(body: Mapping[str, Any]) -> ChainSpec:
    """Parse a ServiceFunctionChain object body (metadata + spec) into a ``ChainSpec``.

    Raises ``ChainInvalid`` listing every problem found.
    """
    meta = body.get("metadata") or {}
    name = str(meta.get("name") or "")
    namespace = str(meta.get("namespace") or "")
    problems = Problems()
    if not name:
        problems.add("metadata.name", "is missing")
    elif len(name) > LABEL_VALUE_MAX:
        problems.add(
            "metadata.name",
            f"is {len(name)} characters; chain names are label values, at most 63",
        )
    spec = body.get("spec")
    if not isinstance(spec, Mapping):
        problems.add("spec", "is missing; a chain needs functions and links")
        raise ChainInvalid(name, problems.items)
    functions = _parse_functions(spec.get("functions"), problems)
    links = _parse_links(spec.get("links"), functions, problems)
    dataplane = parse_dataplane(spec.get("dataplane"), problems)
    for link in links:
        derived = xc_name(name, link.name)
        if len(derived) > DNS_SUBDOMAIN_MAX:
            problems.add(
                f"spec.links[{link.name}]",
                f"CrossConnection name {derived[:40]!r}... would exceed 253 characters",
            )
    if problems.items:
        raise ChainInvalid(name, problems.items)
    return ChainSpec(
        name=name,
        namespace=namespace,
        uid=str(meta.get("uid") or ""),
        generation=int(meta.get("generation") or 0),
        functions=tuple(functions),
        links=tuple(links),
        dataplane=dataplane,
        created=str(meta.get("creationTimestamp") or ""),
    )
