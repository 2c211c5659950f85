"""A fast evaluator for the subset of CEL that CRD validation rules use, over plain JSON values.

`schema.StructuralSchema` compiles each `x-kubernetes-validations` rule with `compile_rule()`
once, from cel-python's parse tree, into nested Python closures that work on the decoded JSON
body as it is (no conversion to cel-python's types). cel-python stays the reference evaluator:

- A construct outside the subset (arithmetic, `matches`, uint or bytes literals, type
  conversions, map literals, …) raises `UnsupportedRule` when compiling: that rule always runs
  on cel-python.
- At run time the closures evaluate exactly the nodes cel-python evaluates (both sides of `&&`
  and `||`, every item of a macro, one branch of `?:`), in its value semantics. A CEL error that
  cel-python carries as a value (a missing field, a key not in a map) is the `ERROR` sentinel
  here, absorbed as cel-python absorbs it (`false && error` is false, `true || error` true, the
  same in `all` and `exists`). Where cel-python would raise instead of carrying a value (an
  error inside `filter`, `map` or `exists_one`), and wherever its answer is not certain here (a
  comparison across types, a negative index, a non-bool condition), `NeedsReference` aborts the
  evaluation, and the caller evaluates that rule on cel-python. A final `ERROR` goes to
  cel-python too, for its exact message. So the answer is always cel-python's.

`plain_json()` says whether a value is one the fast path may read: cel-python's `json_to_cel`
refuses integers outside int64 and non-JSON types, and the fast path must fail the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Tree = Any  # a lark.Tree of cel-python's parser (lark is cel-python's to import and pin)
Env = dict[str, Any]
Closure = Callable[[Env], Any]

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_ORDERED = (int, float, str)  # types cel-python orders like Python does (bool excluded)
_SCALARS = (int, float, str, bool)
_MACROS = ("all", "exists", "exists_one", "filter", "map")
_STRING_METHODS: dict[str, Callable[[str, str], bool]] = {
    "startsWith": str.startswith,
    "endsWith": str.endswith,
    "contains": lambda text, part: part in text,
}
_FUNCTION_NAMES = {"has", "size", *_STRING_METHODS}


class UnsupportedRule(Exception):  # noqa: N818 - a verdict, not a failure
    """The rule uses a construct outside the fast subset: evaluate it with cel-python."""


class _ErrorValue:
    """A CEL error value (cel-python's CELEvalError result, before it is raised)."""

    def __repr__(self) -> str:
        return "ERROR"


ERROR: Any = _ErrorValue()


class NeedsReference(Exception):  # noqa: N818 - a verdict, not a failure
    """This evaluation left the fast path's exact domain: evaluate it with cel-python."""


def plain_json(value: Any) -> bool:
    """Whether `value` holds only JSON types, with integers in int64 (what the fast path reads
    exactly as cel-python's `json_to_cel` converts it)."""
    kind = type(value)
    if kind is dict:
        return all(type(k) is str and plain_json(v) for k, v in value.items())
    if kind is list:
        return all(plain_json(v) for v in value)
    if kind is int:
        return bool(_INT_MIN <= value <= _INT_MAX)
    return kind is str or kind is bool or kind is float or value is None


def compile_rule(tree: Tree, variables: frozenset[str]) -> Callable[[Env], bool]:
    """A function of the activation (`self`, and `oldSelf` for transition rules) giving the
    rule's verdict, or raising NeedsReference. Raises UnsupportedRule when compiling."""
    body = _compile(tree, variables)

    def verdict(env: Env) -> bool:
        result = body(dict(env))
        if type(result) is not bool:  # an error: cel-python gives its message
            raise NeedsReference
        return result

    return verdict


def _is_tree(node: Any) -> bool:
    """Whether a parse-tree child is a node (lark.Tree) rather than a token (a str)."""
    return hasattr(node, "data") and hasattr(node, "children")


def _compile(tree: Any, scope: frozenset[str]) -> Closure:
    if not _is_tree(tree):
        raise UnsupportedRule(f"token {tree!r}")
    data = str(tree.data)
    children = tree.children
    if len(children) == 1 and data in _PASS_THROUGH:
        return _compile(children[0], scope)
    builder = _BUILDERS.get(data)
    if builder is None:
        raise UnsupportedRule(data)
    return builder(tree, scope)


# Nodes that, with a single child, are that child (the grammar's precedence levels).
_PASS_THROUGH = frozenset(
    {
        "expr",
        "conditionalor",
        "conditionaland",
        "relation",
        "addition",
        "multiplication",
        "unary",
        "member",
        "primary",
        "paren_expr",
    }
)


def _verdict(value: Any) -> Any:
    """A bool or ERROR; another value here (`true && 5`) is left to cel-python."""
    if type(value) is not bool and value is not ERROR:
        raise NeedsReference
    return value


def _and(verdicts: list[Any]) -> Any:
    """cel-python's `&&` folded over verdicts: false wins over errors, errors over true."""
    if False in verdicts:
        return False
    return True if ERROR not in verdicts else ERROR


def _or(verdicts: list[Any]) -> Any:
    if True in verdicts:
        return True
    return False if ERROR not in verdicts else ERROR


def _choose(cond: Any, yes: Closure, no: Closure, env: Env) -> Any:
    if cond is ERROR:  # cel-python takes the first branch (an exception is truthy), then fails
        yes(env)
        return ERROR
    if type(cond) is not bool:
        raise NeedsReference
    return yes(env) if cond else no(env)


def _ternary(tree: Tree, scope: frozenset[str]) -> Closure:
    if len(tree.children) != 3:
        raise UnsupportedRule("expr")
    cond, yes, no = (_compile(child, scope) for child in tree.children)
    return lambda env: _choose(cond(env), yes, no, env)


def _logical(tree: Tree, scope: frozenset[str]) -> Closure:
    if len(tree.children) != 2:
        raise UnsupportedRule(str(tree.data))
    left, right = (_compile(child, scope) for child in tree.children)
    # cel-python evaluates both sides (no short circuit), and so does this: a side that
    # cel-python could not evaluate at all must abort here too, even where the other decides.
    combine = _or if tree.data == "conditionalor" else _and
    return lambda env: combine([_verdict(left(env)), _verdict(right(env))])


def _equal(a: Any, b: Any) -> Any:
    kind = type(a)
    if a is ERROR or b is ERROR:
        return ERROR
    if kind is type(b) and (kind in _SCALARS or a is None):
        return a == b
    raise NeedsReference


def _not_equal(a: Any, b: Any) -> Any:
    equal = _equal(a, b)
    return equal if equal is ERROR else not equal


def _ordered(a: Any, b: Any) -> bool:
    """Whether a and b compare as in Python (False: one of them is an error)."""
    if a is ERROR or b is ERROR:
        return False
    if type(a) is not type(b) or type(a) not in _ORDERED:
        raise NeedsReference
    return True


def _contains(item: Any, container: Any) -> Any:
    if item is ERROR or container is ERROR:
        return ERROR
    kind = type(item)
    if kind not in _SCALARS:
        raise NeedsReference
    if type(container) is dict:
        if kind is not str:
            raise NeedsReference
        return item in container
    if type(container) is not list:
        raise NeedsReference
    for element in container:
        if type(element) is not kind:
            raise NeedsReference
        if element == item:
            return True
    return False


def _less(a: Any, b: Any) -> Any:
    return bool(a < b) if _ordered(a, b) else ERROR


def _less_equal(a: Any, b: Any) -> Any:
    return bool(a <= b) if _ordered(a, b) else ERROR


def _greater(a: Any, b: Any) -> Any:
    return bool(a > b) if _ordered(a, b) else ERROR


def _greater_equal(a: Any, b: Any) -> Any:
    return bool(a >= b) if _ordered(a, b) else ERROR


_RELATIONS: dict[str, Callable[[Any, Any], Any]] = {
    "relation_eq": _equal,
    "relation_ne": _not_equal,
    "relation_lt": _less,
    "relation_le": _less_equal,
    "relation_gt": _greater,
    "relation_ge": _greater_equal,
    "relation_in": _contains,
}


def _relation(tree: Tree, scope: frozenset[str]) -> Closure:
    operator, right_tree = tree.children
    if not _is_tree(operator) or len(operator.children) != 1:
        raise UnsupportedRule("relation")
    test = _RELATIONS.get(str(operator.data))
    if test is None:
        raise UnsupportedRule(str(operator.data))
    left, right = _compile(operator.children[0], scope), _compile(right_tree, scope)
    return lambda env: test(left(env), right(env))


def _unary(tree: Tree, scope: frozenset[str]) -> Closure:
    operator, operand_tree = tree.children
    if not _is_tree(operator) or operator.data != "unary_not":
        raise UnsupportedRule("unary")
    operand = _compile(operand_tree, scope)
    return lambda env: _negate(operand(env))


def _negate(value: Any) -> Any:
    if value is ERROR:
        return ERROR
    if type(value) is not bool:
        raise NeedsReference
    return not value


def _select(value: Any, name: str) -> Any:
    """`value.name`: cel-python's result is an error value for a missing key or a non-map."""
    if type(value) is dict and name in value:
        return value[name]
    return ERROR


def _member_dot(tree: Tree, scope: frozenset[str]) -> Closure:
    try:
        root, fields = _field_path(tree, scope)
    except UnsupportedRule:  # not a plain path (`self.links.filter(…).size`): step by step
        member_tree, name = tree.children
        member = _compile(member_tree, scope)
        field = str(name)
        return lambda env: _select(member(env), field)
    return lambda env: _walk(env[root], fields)


def _walk(value: Any, fields: list[str]) -> Any:
    """`value.f.g…`, one closure for the whole path (the commonest node of CRD rules)."""
    for field in fields:
        if type(value) is not dict or field not in value:
            return ERROR
        value = value[field]
    return value


def _index(value: Any, key: Any) -> Any:
    if value is ERROR or key is ERROR:
        return ERROR
    if type(value) is list and type(key) is int and 0 <= key < len(value):
        return value[key]
    if type(value) is dict and type(key) is str:
        return value.get(key, ERROR)
    raise NeedsReference


def _member_index(tree: Tree, scope: frozenset[str]) -> Closure:
    member_tree, key_tree = tree.children
    member, key = _compile(member_tree, scope), _compile(key_tree, scope)
    return lambda env: _index(member(env), key(env))


def _size(value: Any) -> Any:
    if value is ERROR:
        return ERROR
    if type(value) in (list, dict, str):
        return len(value)
    raise NeedsReference


def _string_method(method: Callable[[str, str], bool]) -> Callable[[Any, Any], bool]:
    def apply(text: Any, part: Any) -> Any:
        if text is ERROR or part is ERROR:
            return ERROR
        if type(text) is not str or type(part) is not str:
            raise NeedsReference
        return method(text, part)

    return apply


def _arguments(tree: Tree | None, scope: frozenset[str], count: int) -> list[Closure]:
    exprs = [] if tree is None else tree.children
    if len(exprs) != count or (tree is not None and tree.data != "exprlist"):
        raise UnsupportedRule("arguments")
    return [_compile(expr, scope) for expr in exprs]


def _member_dot_arg(tree: Tree, scope: frozenset[str]) -> Closure:
    member_tree, name, *rest = tree.children
    method = str(name)
    args = rest[0] if rest else None
    if method in _MACROS:
        return _macro(method, _compile(member_tree, scope), args, scope)
    receiver = _compile(member_tree, scope)
    if method == "size":
        _arguments(args, scope, 0)
        return lambda env: _size(receiver(env))
    if method in _STRING_METHODS:
        (argument,) = _arguments(args, scope, 1)
        apply = _string_method(_STRING_METHODS[method])
        return lambda env: apply(receiver(env), argument(env))
    raise UnsupportedRule(f"method {method}")


def _macro_variable(tree: Any) -> str:
    """The variable of a macro (`l` in `self.links.all(l, …)`), which must be a bare name."""
    node = tree
    while _is_tree(node) and node.data in _PASS_THROUGH and len(node.children) == 1:
        node = node.children[0]
    if not _is_tree(node) or node.data != "ident" or len(node.children) != 1:
        raise UnsupportedRule("macro variable")
    name = str(node.children[0])
    if name in _FUNCTION_NAMES:
        raise UnsupportedRule(f"macro variable {name}")
    return name


def _items(value: Any) -> list[Any] | None:
    """What a macro iterates: a list's items, a map's keys (None: an error value)."""
    if value is ERROR:
        return None
    if type(value) is list:
        return value
    if type(value) is dict:
        return list(value)
    raise NeedsReference


def _macro(method: str, receiver: Closure, args: Any, scope: frozenset[str]) -> Closure:
    if not _is_tree(args) or args.data != "exprlist" or len(args.children) != 2:
        raise UnsupportedRule(f"macro {method}")
    variable = _macro_variable(args.children[0])
    body = _compile(args.children[1], scope | {variable})

    def results(env: Env) -> tuple[list[Any], list[Any]] | None:
        items = _items(receiver(env))
        if items is None:
            return None
        saved = env.get(variable, _UNBOUND)
        values = []
        try:
            for item in items:
                env[variable] = item
                values.append(body(env))
        finally:
            if saved is _UNBOUND:
                env.pop(variable, None)
            else:
                env[variable] = saved
        return items, values

    finish = _FINISHERS[method]
    return lambda env: finish(results(env))


def _strict(value: Any) -> Any:
    """A value of a map/filter/exists_one body: cel-python raises on an error there."""
    if value is ERROR:
        raise NeedsReference
    return value


def _strict_bool(value: Any) -> bool:
    if type(value) is not bool:  # an error raises; another value is tested for truth
        raise NeedsReference
    return value


def _finisher(
    combine: Callable[[list[Any], list[Any]], Any],
) -> Callable[[tuple[list[Any], list[Any]] | None], Any]:
    return lambda outcome: ERROR if outcome is None else combine(*outcome)


_UNBOUND: Any = object()
_FINISHERS = {
    "all": _finisher(lambda items, values: _and([_verdict(v) for v in values])),
    "exists": _finisher(lambda items, values: _or([_verdict(v) for v in values])),
    "exists_one": _finisher(
        lambda items, values: sum(_strict_bool(v) for v in values) == 1,
    ),
    "filter": _finisher(
        lambda items, values: [i for i, v in zip(items, values, strict=True) if _strict_bool(v)]
    ),
    "map": _finisher(lambda items, values: [_strict(v) for v in values]),
}


def _ident(tree: Tree, scope: frozenset[str]) -> Closure:
    name = str(tree.children[0])
    if name not in scope:
        raise UnsupportedRule(f"name {name}")

    def lookup(env: Env) -> Any:
        return env[name]

    return lookup


def _field_path(tree: Any, scope: frozenset[str]) -> tuple[str, list[str]]:
    """`self.a.b` -> ('self', ['a', 'b']); UnsupportedRule if not a plain field path."""
    fields: list[str] = []
    node = tree
    while True:
        while _is_tree(node) and node.data in _PASS_THROUGH:
            if len(node.children) != 1:
                raise UnsupportedRule("field path")
            node = node.children[0]
        if not _is_tree(node):
            raise UnsupportedRule("field path")
        if node.data == "member_dot":
            node, name = node.children
            fields.insert(0, str(name))
        elif node.data == "ident" and fields and str(node.children[0]) in scope:
            return str(node.children[0]), fields
        else:
            raise UnsupportedRule("field path")


def _has(args: Any, scope: frozenset[str]) -> Closure:
    if not _is_tree(args) or len(args.children) != 1:
        raise UnsupportedRule("has")
    root, fields = _field_path(args.children[0], scope)
    # cel-python's has() is true when the field path evaluates without error: every step a
    # map holding the next field (only plain paths are in the subset).
    return lambda env: _walk(env[root], fields) is not ERROR


def _ident_arg(tree: Tree, scope: frozenset[str]) -> Closure:
    name, *rest = tree.children
    args = rest[0] if rest else None
    if str(name) == "has":
        return _has(args, scope)
    if str(name) == "size":
        (argument,) = _arguments(args, scope, 1)
        return lambda env: _size(argument(env))
    raise UnsupportedRule(f"function {name}")


def _list_lit(tree: Tree, scope: frozenset[str]) -> Closure:
    if not tree.children:
        return lambda env: []
    (exprlist,) = tree.children
    items = [_compile(expr, scope) for expr in exprlist.children]
    return lambda env: _list([item(env) for item in items])


def _list(values: list[Any]) -> Any:
    return ERROR if any(v is ERROR for v in values) else values


def _literal(tree: Tree, scope: frozenset[str]) -> Closure:
    value = literal_value(tree)
    return lambda env: value


def literal_value(tree: Tree) -> Any:
    """A literal as the plain value the fast path uses, computed by cel-python itself (so that
    escapes and number syntax are read exactly as it reads them)."""
    import celpy
    from celpy import celtypes
    from celpy.evaluation import CELEvalError

    try:
        value = celpy.Environment().program(tree).evaluate({})
    except CELEvalError as err:
        raise UnsupportedRule(f"literal: {err}") from err
    for cel_type, plain in (
        (celtypes.BoolType, bool),
        (celtypes.IntType, int),
        (celtypes.DoubleType, float),
        (celtypes.StringType, str),
    ):
        if isinstance(value, cel_type):
            return plain(value)
    if value is None:
        return None
    raise UnsupportedRule(f"literal of type {type(value).__name__}")


_BUILDERS: dict[str, Callable[[Tree, frozenset[str]], Closure]] = {
    "expr": _ternary,
    "conditionalor": _logical,
    "conditionaland": _logical,
    "relation": _relation,
    "unary": _unary,
    "member_dot": _member_dot,
    "member_dot_arg": _member_dot_arg,
    "member_index": _member_index,
    "ident": _ident,
    "ident_arg": _ident_arg,
    "list_lit": _list_lit,
    "literal": _literal,
}
