"""Structural-schema behaviour of CRD versions: defaulting, pruning, OpenAPI and CEL validation.

The store builds one `StructuralSchema` per served CRD version when the CRD is registered (and
keeps it while the version's schema does not change) and runs it on every write of a custom
object: prune unknown fields, apply `default`s, then check the OpenAPI v3 schema (with
jsonschema) and the `x-kubernetes-validations` CEL rules. Failures come back as `errors.Cause`
lists, answered as 422 Invalid.

Each rule is compiled once per schema, twice: by cel-python (the reference) and by `celfast`
into closures over the JSON body, which answer nearly every evaluation about 100 times faster
and hand the rest (constructs outside their subset, CEL errors, values outside JSON) to
cel-python, so verdicts and messages are cel-python's (docs/local-cluster.md). Likewise
`schemacheck` compiles the OpenAPI schema into an acceptance check: a value it passes has no
jsonschema error; any other value is checked by jsonschema, which gives the causes.

Updates are ratcheted as in Kubernetes (CRDValidationRatcheting): a value equal to its
counterpart in the stored object (object properties by name, `x-kubernetes-list-type: map` items
by their keys) is valid as it was, so neither its rules nor those below it run, and an OpenAPI
error inside an unchanged value is dropped. A status subresource write checks only the `status`
part of the schema.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from sfc_k8s.local.apiserver.celfast import (
    NeedsReference,
    UnsupportedRule,
    compile_rule,
    plain_json,
)
from sfc_k8s.local.apiserver.errors import Cause
from sfc_k8s.local.apiserver.schemacheck import Acceptor, compile_acceptor

if TYPE_CHECKING:
    import jsonschema  # type: ignore[import-untyped]

# jsonschema and cel-python are imported on first use: together they cost a few hundred
# milliseconds of start-up that a server with no custom objects yet does not need.

_ROOT_KEEP = ("apiVersion", "kind", "metadata")
_CEL_ENV: Any = None
_MISSING: Any = object()  # no correlated old value (a create, a new item, an unkeyed list)


def _cel_environment() -> Any:
    global _CEL_ENV  # noqa: PLW0603 - one shared parser; building it costs ~0.3 s
    if _CEL_ENV is None:
        import celpy

        _CEL_ENV = celpy.Environment()
    return _CEL_ENV


def field_path(parts: list[str | int]) -> str:
    """`['spec', 'links', 0, 'a']` -> `spec.links[0].a`."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _to_jsonschema(node: Any) -> Any:
    """Rewrite OpenAPI v3 (Kubernetes flavour) into plain JSON Schema draft 4."""
    if isinstance(node, list):
        return [_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    result = {k: _to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    result.pop("nullable", None)
    result.pop("format", None)
    if node.get("x-kubernetes-int-or-string"):
        result.pop("type", None)
        result["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in result:
        base = result["type"]
        result["type"] = [*base, "null"] if isinstance(base, list) else [base, "null"]
    return result


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return json.dumps(value)


class SchemaInvalidError(ValueError):
    """A CRD's openAPIV3Schema that is not a valid schema."""


class StructuralSchema:
    """One CRD version's `openAPIV3Schema`, ready to default, prune and validate objects."""

    def __init__(self, schema: dict[str, Any], *, fast_rules: bool = True) -> None:
        """`fast_rules=False` evaluates every rule with cel-python and checks every value
        with jsonschema (benchmarks and the differential tests compare the two)."""
        self.schema = schema
        self._fast_rules = fast_rules
        self._plain = _to_jsonschema(schema)
        self._validators: dict[str | None, Any] = {}
        self._programs: dict[str, Any] = {}
        self._fast: dict[str, Callable[[dict[str, Any]], bool] | None] = {}
        self.evaluations = 0  # CEL rule evaluations so far (tests and benchmarks read it)
        self.reference_evaluations = 0  # those of them that cel-python evaluated
        self._acceptors: dict[str | None, Acceptor | None] = {}
        ruled: set[int] = set()
        _ruled_nodes(schema, ruled)
        self._ruled = frozenset(ruled)  # ids of the schema nodes with rules in or below them
        self.reference_openapi_checks = 0  # values that jsonschema checked

    def check(self) -> None:
        """Raise SchemaInvalidError if the schema itself is not a valid OpenAPI schema."""
        import jsonschema

        try:
            jsonschema.Draft4Validator.check_schema(self._plain)
        except jsonschema.SchemaError as err:
            raise SchemaInvalidError(err.message) from err
        from celpy.celparser import CELParseError

        for rule in _rules(self.schema):
            try:
                self.program(rule)
            except CELParseError as err:
                raise SchemaInvalidError(f"rule {rule!r} does not compile: {err}") from err

    def apply_defaults(self, obj: dict[str, Any]) -> dict[str, Any]:
        result = copy.deepcopy(obj)
        _default(self.schema, result)
        return result

    def prune(self, obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The object without the fields the schema does not declare, and their paths."""
        result = copy.deepcopy(obj)
        removed: list[str] = []
        _prune(self.schema, result, root=True, removed=removed)
        return result, removed

    def validate(
        self, obj: dict[str, Any], old: dict[str, Any] | None, *, part: str | None = None
    ) -> list[Cause]:
        """Causes of `obj` being invalid; `old` is the stored object of an update (None on a
        create), `part` a top-level field (`"status"`) when only it may have changed."""
        schema, plain = self.schema, self._plain
        value: Any = {k: v for k, v in obj.items() if k != "metadata"}
        before: Any = _MISSING
        if old is not None:
            before = {k: v for k, v in old.items() if k != "metadata"}
        prefix: list[str | int] = []
        if part is not None:
            schema = (schema.get("properties") or {}).get(part) or {}
            plain = (plain.get("properties") or {}).get(part) or {}
            value, before, prefix = obj.get(part, _MISSING), _part(before, part), [part]
            if value is _MISSING:
                return []
        if before is not _MISSING and value == before:
            return []
        causes = self._check_openapi(part, plain, schema, value, before=before, prefix=prefix)
        if not causes:
            causes.extend(self._check_rules(schema, value, before, prefix))
        return causes

    def _check_openapi(
        self,
        part: str | None,
        plain: dict[str, Any],
        schema: dict[str, Any],
        value: Any,
        *,
        before: Any,
        prefix: list[str | int],
    ) -> list[Cause]:
        """OpenAPI causes: none if the compiled acceptor passes the value, jsonschema's else."""
        if part not in self._validators:
            import jsonschema

            validator = jsonschema.Draft4Validator(plain)
            self._validators[part] = validator
            keywords = frozenset(validator.VALIDATORS)
            self._acceptors[part] = compile_acceptor(plain, keywords) if self._fast_rules else None
        acceptor = self._acceptors[part]
        if acceptor is not None and acceptor(value):
            return []
        self.reference_openapi_checks += 1
        return [
            _cause(err, prefix)
            for err in self._validators[part].iter_errors(value)
            if not _unchanged_at(schema, value, before, list(err.absolute_path))
        ]

    def program(self, rule: str) -> Any:
        """The compiled CEL program of `rule` (compiled on first use, then kept)."""
        program = self._programs.get(rule)
        if program is None:
            env = _cel_environment()
            program = self._programs[rule] = env.program(env.compile(rule))
        return program

    def _check_rules(
        self, schema: dict[str, Any], value: Any, old: Any, path: list[str | int]
    ) -> Iterator[Cause]:
        trusted: bool | None = None
        for node, current, previous, where in _walk_rules(schema, value, old, path, self._ruled):
            if trusted is None:
                # One walk proves every value below `value` plain JSON (the common case);
                # otherwise each rule's own values are checked: cel-python converts only those.
                trusted = plain_json(value) and (old is _MISSING or plain_json(old))
            for rule in node["x-kubernetes-validations"]:
                text = rule.get("rule", "")
                is_transition = "oldSelf" in text
                if is_transition and previous is _MISSING:
                    continue
                self.evaluations += 1
                result = self._evaluate(
                    text, current, previous if is_transition else _MISSING, trusted=trusted
                )
                if result is True:
                    continue
                if result is False:
                    message = rule.get("message") or f"failed rule: {text}"
                else:
                    message = f"rule {text!r} could not be evaluated: {result}"
                yield Cause(
                    _rule_target(where, rule.get("fieldPath", "")),
                    rule.get("reason", "FieldValueInvalid"),
                    f"Invalid value: {_show(current)}: {message}",
                )

    def _evaluate(self, text: str, current: Any, previous: Any, *, trusted: bool) -> Any:
        """The rule's verdict (True, False) or what cel-python made of it instead (an error,
        a value of another type). The fast evaluator answers when it can; cel-python else."""
        fast = self.fast_program(text)
        plain = trusted or (plain_json(current) and (previous is _MISSING or plain_json(previous)))
        if fast is not None and plain:
            activation = {"self": current}
            if previous is not _MISSING:
                activation["oldSelf"] = previous
            try:
                return fast(activation)
            except NeedsReference:
                pass
        return self._evaluate_reference(text, current, previous)

    def _evaluate_reference(self, text: str, current: Any, previous: Any) -> Any:
        """The rule evaluated by cel-python (json_to_cel raises ValueError on values outside
        JSON, as it always did)."""
        from celpy import celtypes
        from celpy.adapter import json_to_cel
        from celpy.evaluation import CELEvalError

        self.reference_evaluations += 1
        activation = {"self": json_to_cel(current)}
        if previous is not _MISSING:
            activation["oldSelf"] = json_to_cel(previous)
        try:
            result = self.program(text).evaluate(activation)
        except CELEvalError as err:
            return err
        return bool(result) if isinstance(result, celtypes.BoolType) else result

    def fast_program(self, rule: str) -> Callable[[dict[str, Any]], bool] | None:
        """The rule compiled by the fast evaluator, or None when it uses a construct outside
        its subset (compiled on first use, then kept)."""
        if not self._fast_rules:
            return None
        if rule not in self._fast:
            variables = frozenset({"self", "oldSelf"} if "oldSelf" in rule else {"self"})
            try:
                self._fast[rule] = compile_rule(_cel_environment().compile(rule), variables)
            except UnsupportedRule:
                self._fast[rule] = None
        return self._fast[rule]


def _rules(node: Any) -> Iterator[str]:
    """Every CEL rule text of a schema."""
    if isinstance(node, dict):
        for rule in node.get("x-kubernetes-validations") or []:
            if isinstance(rule, dict) and isinstance(rule.get("rule"), str):
                yield rule["rule"]
        for key, sub in node.items():
            if key != "x-kubernetes-validations":
                yield from _rules(sub)
    elif isinstance(node, list):
        for sub in node:
            yield from _rules(sub)


def _part(value: Any, name: str) -> Any:
    return value.get(name, _MISSING) if isinstance(value, dict) else _MISSING


def _unchanged_at(schema: Any, value: Any, old: Any, path: list[str | int]) -> bool:
    """Whether the value at `path`, or one of the values holding it, equals its old
    counterpart (an OpenAPI error there is then ratcheted). Items of a `list-type: map` list
    are correlated by their keys, those of other lists not at all."""
    for part in path:
        if old is _MISSING:
            return False
        if value == old:
            return True
        if isinstance(part, int) and isinstance(value, list) and isinstance(schema, dict):
            items, keys = schema.get("items"), schema.get("x-kubernetes-list-map-keys") or []
            item = value[part] if 0 <= part < len(value) else None
            olds = _keyed_items(schema, old)
            if not olds or not isinstance(item, dict):
                return False
            schema, value = items, item
            old = olds.get(tuple(json.dumps(item.get(k)) for k in keys), _MISSING)
        elif isinstance(part, str) and isinstance(value, dict) and isinstance(schema, dict):
            props = schema.get("properties") or {}
            extra = schema.get("additionalProperties")
            schema = props.get(part, extra if isinstance(extra, dict) else {})
            value, old = value.get(part), _part(old, part)
        else:
            return False
    return old is not _MISSING and value == old


def _rule_target(where: list[str | int], extra_path: str) -> str:
    target = field_path(where)
    if not extra_path:
        return target
    if extra_path.startswith("["):
        return target + extra_path
    return f"{target}{extra_path}" if target else extra_path.lstrip(".")


def _default(schema: dict[str, Any], value: Any) -> None:
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for name, sub in props.items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
        for name, sub in props.items():
            if name in value:
                _default(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, item in value.items():
                if name not in props:
                    _default(extra, item)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default(schema["items"], item)


def _prune(
    schema: dict[str, Any],
    value: Any,
    *,
    root: bool = False,
    path: list[str | int] | None = None,
    removed: list[str] | None = None,
) -> None:
    path = path or []
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        keep_all = schema.get("x-kubernetes-preserve-unknown-fields") or extra not in (None, False)
        embedded = root or schema.get("x-kubernetes-embedded-resource")
        if props and not keep_all:
            for name in list(value):
                if name not in props and not (embedded and name in _ROOT_KEEP):
                    del value[name]
                    if removed is not None:
                        removed.append(field_path([*path, name]))
        for name, item in value.items():
            if name in props:
                _prune(props[name], item, path=[*path, name], removed=removed)
            elif isinstance(extra, dict):
                _prune(extra, item, path=[*path, name], removed=removed)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            _prune(schema["items"], item, path=[*path, index], removed=removed)


def _cause(err: jsonschema.ValidationError, prefix: list[str | int]) -> Cause:
    parts: list[str | int] = [*prefix, *err.absolute_path]
    path = field_path(parts)
    if err.validator == "required":
        missing = [p for p in err.validator_value if p not in (err.instance or {})]
        name = missing[0] if missing else "?"
        return Cause(field_path([*parts, name]), "FieldValueRequired", "Required value")
    if err.validator == "type":
        want = err.validator_value
        return Cause(
            path,
            "FieldValueTypeInvalid",
            f"Invalid value: {_show(err.instance)}: {path or 'body'} in body must be of type "
            f"{want if isinstance(want, str) else ' or '.join(want)}: {_show(err.instance)}",
        )
    if err.validator == "enum":
        allowed = ", ".join(json.dumps(v) for v in err.validator_value)
        return Cause(
            path,
            "FieldValueNotSupported",
            f"Unsupported value: {_show(err.instance)}: supported values: {allowed}",
        )
    return Cause(path, "FieldValueInvalid", f"Invalid value: {_show(err.instance)}: {err.message}")


def _walk_rules(
    schema: dict[str, Any],
    value: Any,
    old: Any,
    path: list[str | int],
    ruled: frozenset[int] | None = None,
) -> Iterator[tuple[dict[str, Any], Any, Any, list[str | int]]]:
    """The (schema node with rules, value, correlated old value or _MISSING, path) to check;
    an unchanged value is skipped with everything below it (ratcheting), and so is a value
    whose schema node has no rule in or below it (`ruled`: the ids of those that have)."""
    if ruled is not None and id(schema) not in ruled:
        return
    if old is not _MISSING and value == old:
        return
    if schema.get("x-kubernetes-validations"):
        yield schema, value, old, path
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            sub = props.get(name) if name in props else extra if isinstance(extra, dict) else None
            if sub is not None and name != "metadata":
                yield from _walk_rules(sub, item, _part(old, name), [*path, name], ruled)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        olds = _keyed_items(schema, old)
        keys = schema.get("x-kubernetes-list-map-keys") or []
        for index, item in enumerate(value):
            previous = _MISSING
            if olds and isinstance(item, dict):
                previous = olds.get(tuple(json.dumps(item.get(k)) for k in keys), _MISSING)
            yield from _walk_rules(schema["items"], item, previous, [*path, index], ruled)


def _ruled_nodes(schema: Any, found: set[int]) -> bool:
    """Whether `schema` has a rule in or below it; adds the ids of such nodes to `found`."""
    if not isinstance(schema, dict):
        return False
    subs = [*(schema.get("properties") or {}).values()]
    subs += [schema.get("additionalProperties"), schema.get("items")]  # non-dicts: no rules
    below = [_ruled_nodes(sub, found) for sub in subs]  # every sub: each records its own id
    if schema.get("x-kubernetes-validations") or any(below):
        found.add(id(schema))
        return True
    return False


def _keyed_items(schema: dict[str, Any], old: Any) -> dict[tuple[str, ...], Any]:
    """Old items of a `x-kubernetes-list-type: map` list by their keys (others: none)."""
    keys = schema.get("x-kubernetes-list-map-keys") or []
    if schema.get("x-kubernetes-list-type") != "map" or not keys or not isinstance(old, list):
        return {}
    return {
        tuple(json.dumps(item.get(k)) for k in keys): item for item in old if isinstance(item, dict)
    }
