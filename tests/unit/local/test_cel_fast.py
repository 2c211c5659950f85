"""The fast CEL evaluator and OpenAPI acceptor give cel-python's and jsonschema's answers.

Covers: every rule of every CRD in deploy/crds (and of the API server tests' CRD) evaluated by
both evaluators on generated chains, valid and broken (missing fields, wrong types, duplicates,
empty lists, out-of-range ints), with identical verdicts; `validate()` of those chains gives the
same causes (field, reason, message) with the fast path on and off; a set of tricky expressions
(errors absorbed or not by `&&`, `||`, `all`, `exists`; errors inside `filter`/`map`/
`exists_one`; int vs double vs string; null; `in` on lists and maps; string methods; indexes;
transition rules with `oldSelf`) agrees on random values; constructs outside the subset are left
to cel-python at compile time; a valid chain create evaluates no rule on cel-python, and an
invalid one is still refused with cel-python's message. The compiled OpenAPI acceptor accepts
exactly what jsonschema's Draft4Validator finds no error in, for every CRD's schema and status
part on values generated from the schema; schemas with other keywords get no acceptor.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from sfc_k8s.local.apiserver import celfast
from sfc_k8s.local.apiserver.errors import Cause
from sfc_k8s.local.apiserver.schema import (
    _MISSING,
    StructuralSchema,
    _rules,
    _to_jsonschema,
    _walk_rules,
)
from sfc_k8s.local.apiserver.schemacheck import compile_acceptor
from tests.fixtures.chains import firewall_chain

ROOT = Path(__file__).resolve().parents[3]
CRD_FILES = [
    *sorted((ROOT / "deploy" / "crds").glob("*.yaml")),
    ROOT / "tests" / "integration" / "apiserver" / "sfc-crd.yaml",
]


def _schemas() -> list[dict[str, Any]]:
    schemas = []
    for path in CRD_FILES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                for version in doc["spec"]["versions"]:
                    schemas.append(version["schema"]["openAPIV3Schema"])
    return schemas


NAMES = ["client", "firewall", "server", "nat", 7, None]
IFACES = ["eth1", "eth2", "lo", "", 1]


def _pick(rng: random.Random, options: list[Any]) -> Any:
    return options[rng.randrange(len(options))]


def _odd(rng: random.Random) -> Any:
    """A value of a wrong type, or an edge value."""
    return _pick(rng, [None, 3, 2.5, "x", True, [], {}, ["eth1"], {"a": 1}, 2**70, -(2**63)])


def _selector(rng: random.Random) -> Any:
    selector: dict[str, Any] = {}
    if rng.random() < 0.7:
        selector["matchLabels"] = _pick(rng, [{"app": "x"}, {}, {"a": "1", "b": "2"}])
    if rng.random() < 0.4:
        expr: dict[str, Any] = {"key": "tier"}
        expr["operator"] = _pick(rng, ["In", "NotIn", "Exists", "DoesNotExist", 3])
        if rng.random() < 0.6:
            expr["values"] = _pick(rng, [["a"], [], ["a", "b"], None])
        selector["matchExpressions"] = [expr]
    return selector if rng.random() < 0.9 else _odd(rng)


def _function(rng: random.Random) -> Any:
    function: dict[str, Any] = {
        "name": _pick(rng, NAMES),
        "selector": _selector(rng),
        "interfaces": rng.sample(IFACES, rng.randrange(0, 3)),
    }
    if rng.random() < 0.4:
        auto: dict[str, Any] = {"maxReplicas": _pick(rng, [1, 4, 10, 2.0, "5"])}
        if rng.random() < 0.7:
            auto["minReplicas"] = _pick(rng, [1, 4, 11, 3.5, None])
        function["autoscaling"] = auto
    if rng.random() < 0.1:
        del function[_pick(rng, ["name", "selector", "interfaces"])]
    return function if rng.random() < 0.95 else _odd(rng)


def _end(rng: random.Random) -> Any:
    end = {"function": _pick(rng, NAMES), "interface": _pick(rng, IFACES)}
    if rng.random() < 0.1:
        del end[_pick(rng, ["function", "interface"])]
    return end if rng.random() < 0.95 else _odd(rng)


def _link(rng: random.Random) -> Any:
    link = {
        "name": _pick(rng, ["l1", "l2", "l1", 5]),
        "a": _end(rng),
        "b": _end(rng),
    }
    if rng.random() < 0.1:
        del link[_pick(rng, ["a", "b", "name"])]
    return link


def _chain(rng: random.Random) -> dict[str, Any]:
    """A chain, most often a small edit of a valid one, sometimes broken in several places."""
    chain = firewall_chain()
    spec = chain["spec"]
    if rng.random() < 0.3:
        return chain
    if rng.random() < 0.5:
        spec["functions"] = [_function(rng) for _ in range(rng.randrange(0, 4))]
    else:
        spec["functions"][rng.randrange(3)] = _function(rng)
    if rng.random() < 0.5:
        spec["links"] = [_link(rng) for _ in range(rng.randrange(0, 4))]
    elif rng.random() < 0.5:
        spec["links"][rng.randrange(2)] = _link(rng)
    if rng.random() < 0.1:
        spec[_pick(rng, ["functions", "links"])] = _odd(rng)
    return chain


def _fast_verdict(schema: StructuralSchema, text: str, env: dict[str, Any]) -> Any:
    fast = schema.fast_program(text)
    assert fast is not None, f"rule outside the fast subset: {text}"
    try:
        return fast(env)
    except celfast.NeedsReference:
        return "reference"


def _reference_verdict(schema: StructuralSchema, text: str, env: dict[str, Any]) -> Any:
    try:
        result = schema._evaluate_reference(text, env["self"], env.get("oldSelf", _MISSING))
    except Exception as err:  # cel-python raising (TypeError…) is an outcome too
        return f"raised {type(err).__name__}"
    return result if isinstance(result, bool) else "error"


def _agree(fast: Any, reference: Any, where: str) -> bool:
    """The fast verdict is cel-python's, or the fast path stepped aside."""
    assert fast in ("reference", reference), where
    return fast != "reference"


def test_every_crd_rule_agrees_on_generated_chains() -> None:
    rng = random.Random(14)
    schemas = [(raw, StructuralSchema(raw)) for raw in _schemas()]
    assert sum(len(list(_rules(raw))) for raw, _ in schemas) >= 12
    answered = compared = 0
    for _ in range(30):
        chain = _chain(rng)
        body = {k: v for k, v in chain.items() if k != "metadata"}
        for raw, schema in schemas:
            for node, value, _old, where in _walk_rules(raw, body, _MISSING, []):
                if not celfast.plain_json(value):
                    continue  # cel-python's json_to_cel refuses it: validate() never goes fast
                for rule in node["x-kubernetes-validations"]:
                    env = {"self": value}
                    fast = _fast_verdict(schema, rule["rule"], env)
                    reference = _reference_verdict(schema, rule["rule"], env)
                    answered += _agree(fast, reference, f"{rule['rule']} at {where}: {value!r}")
                    compared += 1
    assert compared > 250
    assert answered > 0.75 * compared  # the rest: mostly comparisons across types


def _causes(causes: list[Cause]) -> list[dict[str, str]]:
    return [cause.as_dict() for cause in causes]


def test_validate_gives_the_same_causes_with_and_without_the_fast_path() -> None:
    rng = random.Random(15)
    crd = yaml.safe_load((ROOT / "deploy" / "crds" / "servicefunctionchains.yaml").read_text())
    raw = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    fast, reference = StructuralSchema(raw), StructuralSchema(raw, fast_rules=False)
    refused = 0
    for _ in range(40):
        chain = _chain(rng)
        old = firewall_chain() if rng.random() < 0.3 else None
        try:
            expected = reference.validate(chain, old)
        except ValueError:  # an int outside int64 reaching a rule: cel-python cannot take it
            with pytest.raises(ValueError):
                fast.validate(chain, old)
            continue
        assert _causes(fast.validate(chain, old)) == _causes(expected), chain
        refused += bool(expected)
    assert 5 < refused < 40
    assert fast.reference_evaluations < reference.reference_evaluations / 5


# Rules over `self` = {a, b: bools; x, y: scalars; l: list; m: map; s, t: strings} (each
# sometimes missing or of another type), chosen for CEL's corner cases.
TRICKY = [
    "self.a || self.b",
    "self.a && self.b",
    "!self.a",
    "(has(self.a) && self.a) || (has(self.b) && self.b)",
    "self.a ? self.x == 1 : self.y == 1",
    "(self.a ? self.x : self.y) == 1",
    "self.x == self.y",
    "self.x != self.y",
    "self.x < self.y || self.x >= self.y",
    "self.x <= 2 && self.y > 1",
    "self.x == 1.0",
    "self.x == null",
    "self.x in self.l",
    "self.x in ['a', 'b', 1]",
    "self.s in self.m",
    "size(self.l) > 0 && size(self.s) < 3",
    "self.l.size() == 2 || self.m.size() == 0",
    "has(self.m.k) && self.m.k == 1",
    "has(self.l.k)",
    "self.l.all(e, e > 1)",
    "self.l.all(e, e == self.missing) || true",
    "self.l.exists(e, e == 'a')",
    "self.l.exists(e, e.k == 1)",
    "self.l.exists_one(e, e == 1)",
    "self.l.exists_one(e, e.k == 1) || true",
    "self.l.filter(e, e > 0).size() == 1",
    "false && self.l.filter(e, e.k == 1).size() == 0",
    "self.l.map(e, e == 1).exists(v, v)",
    "self.m.all(k, k.startsWith('a'))",
    "self.s.startsWith('a') && self.s.endsWith(self.t)",
    "self.s.contains('b') || self.s.contains(self.t)",
    "self.l[0] == 1",
    "self.m['k'] == 1 || self.m['z'] == 2",
    "[self.x, 1].all(v, v == 1)",
    "self.l.all(e, self.l.exists(f, f == e))",
    "self.missing.all(e, e) || true",
    "(self.missing ? true : self.l.filter(e, e.k == 1).size() == 0) || true",
    "(self.missing ? self.l.filter(e, e.k == 1).size() == 0 : true) || true",
    "(self.l[0] ? true : false) || true",
]
TRANSITION = ["self.x == oldSelf.x", "!has(oldSelf.a) || self.a == oldSelf.a"]
SCALARS = [0, 1, 2, -1, 1.0, 2.5, "a", "b", "", True, False, None, [1], {"k": 1}]
LISTS = [[], [1], [1, 2], [2, 1, 1], ["a", "b"], [1, "a"], [{"k": 1}, {"k": 2}], [None], None]
MAPS = [{}, {"k": 1}, {"k": "1", "ab": 2}, {"a": 1, "b": 2}, [], "k"]


def _random_self(rng: random.Random) -> dict[str, Any]:
    value: dict[str, Any] = {
        "a": _pick(rng, [True, False, True, False, 1, None]),
        "b": _pick(rng, [True, False, "x"]),
        "x": _pick(rng, SCALARS),
        "y": _pick(rng, SCALARS),
        "l": copy.deepcopy(_pick(rng, LISTS)),
        "m": copy.deepcopy(_pick(rng, MAPS)),
        "s": _pick(rng, ["abc", "a", "", "bab", 3]),
        "t": _pick(rng, ["c", "b", "", None]),
    }
    for key in rng.sample(sorted(value), rng.randrange(0, 3)):
        del value[key]
    return value


def test_tricky_expressions_agree_on_random_values() -> None:
    rng = random.Random(16)
    schema = StructuralSchema({"type": "object"})
    answered = compared = 0
    for _ in range(35):
        current, previous = _random_self(rng), _random_self(rng)
        for text in TRICKY + TRANSITION:
            env = {"self": current, "oldSelf": previous} if "oldSelf" in text else {"self": current}
            fast = _fast_verdict(schema, text, env)
            reference = _reference_verdict(schema, text, env)
            answered += _agree(fast, reference, f"{text}: {env!r}")
            compared += 1
    assert answered > 0.35 * compared


@pytest.mark.parametrize(
    "rule",
    [
        "self.x + 1 > 2",  # arithmetic
        "self.s.matches('^a')",  # regular expressions (re2 in cel-python)
        "self.x == 1u",  # uint literal
        "int(self.s) == 1",  # conversions
        "{'a': 1}.a == 1",  # map literal
        "self.l.exists(size, size > 0)",  # a macro variable named like a function
    ],
)
def test_constructs_outside_the_subset_are_left_to_cel_python(rule: str) -> None:
    schema = StructuralSchema({"type": "object"})
    assert schema.fast_program(rule) is None


def test_chain_creates_run_no_rule_on_cel_python() -> None:
    crd = yaml.safe_load((ROOT / "deploy" / "crds" / "servicefunctionchains.yaml").read_text())
    schema = StructuralSchema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    chain = firewall_chain()
    chain["spec"]["functions"][0]["autoscaling"] = {
        "minReplicas": 1,
        "maxReplicas": 4,
        "metric": "sessions",
        "targetAverageValue": "100",
    }
    assert schema.validate(chain, None) == []
    bad = copy.deepcopy(chain)
    bad["spec"]["functions"][0]["autoscaling"]["minReplicas"] = 5
    bad["spec"]["links"][1]["name"] = bad["spec"]["links"][0]["name"]
    messages = sorted(c.message for c in schema.validate(bad, None))
    assert messages == [
        'Invalid value: "object": link names must be unique',
        'Invalid value: "object": minReplicas must not exceed maxReplicas',
    ]
    assert schema.evaluations == 2 * 11
    assert schema.reference_evaluations == 0


# ----- OpenAPI: the compiled acceptor against jsonschema -----------------------------------

STRINGS = ["", "a", "eth1", "web-1", "-bad", "A_b.c", "100k", "1.5m", "In", "x" * 70, "é"]


def _instance(rng: random.Random, schema: dict[str, Any], depth: int = 0) -> Any:
    """A value shaped by `schema` (draft 4 form), now and then off it in one place."""
    if rng.random() < 0.04 or depth > 8:
        return _odd(rng)
    kinds = schema.get("type", "object")
    kind = _pick(rng, kinds) if isinstance(kinds, list) else kinds
    if "enum" in schema and rng.random() < 0.9:
        return _pick(rng, schema["enum"])
    if kind == "object":
        return _object_instance(rng, schema, depth)
    if kind == "array":
        items = schema.get("items") or {}
        return [_instance(rng, items, depth + 1) for _ in range(rng.randrange(3))]
    return _scalar_instance(rng, schema, kind)


def _object_instance(rng: random.Random, schema: dict[str, Any], depth: int) -> dict[str, Any]:
    value = {}
    for name, sub in (schema.get("properties") or {}).items():
        wanted = name in schema.get("required", []) or rng.random() < 0.5
        if wanted and rng.random() < 0.97:
            value[name] = _instance(rng, sub, depth + 1)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) or rng.random() < 0.05:
        for key in rng.sample(["k", "app", "zz"], rng.randrange(0, 3)):
            value[key] = _instance(rng, extra if isinstance(extra, dict) else {}, depth + 1)
    return value


def _scalar_instance(rng: random.Random, schema: dict[str, Any], kind: str) -> Any:
    if kind in ("integer", "number"):
        bound = _pick(rng, [schema.get("minimum", 0), schema.get("maximum", 10)])
        return _pick(rng, [bound, bound + 1, bound - 1, 5, 2.5 if kind == "number" else 7])
    if kind == "boolean":
        return _pick(rng, [True, False])
    return _pick(rng, STRINGS)


def _all_schemas() -> list[dict[str, Any]]:
    extra = ROOT / "src" / "sfc_k8s" / "local" / "apiserver" / "crds"
    schemas = _schemas()
    for path in sorted(extra.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                schemas += [v["schema"]["openAPIV3Schema"] for v in doc["spec"]["versions"]]
    return schemas


def test_openapi_acceptor_agrees_with_jsonschema() -> None:
    import jsonschema

    rng = random.Random(17)
    accepted = refused = 0
    for raw in _all_schemas():
        plain = _to_jsonschema(raw)
        for part in (plain, (plain.get("properties") or {}).get("status") or {}):
            validator = jsonschema.Draft4Validator(part)
            acceptor = compile_acceptor(part, frozenset(validator.VALIDATORS))
            assert acceptor is not None
            for _ in range(60):
                value = _instance(rng, part)
                valid = not list(validator.iter_errors(value))
                assert acceptor(value) == valid, value
                accepted, refused = accepted + valid, refused + (not valid)
    assert accepted > 100
    assert refused > 100


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"$ref": "#/x"}}},
        {"allOf": [{"type": "string"}]},
        {"type": "array", "uniqueItems": True},
        {"type": "integer", "minimum": 1, "exclusiveMinimum": True},
        {"enum": [1, "a"]},
    ],
)
def test_openapi_keywords_outside_the_acceptor_leave_it_to_jsonschema(
    schema: dict[str, Any],
) -> None:
    import jsonschema

    keywords = frozenset(jsonschema.Draft4Validator.VALIDATORS)
    assert compile_acceptor(schema, keywords) is None
