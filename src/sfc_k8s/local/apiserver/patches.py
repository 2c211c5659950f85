"""The patch formats the API server accepts: JSON merge, JSON patch and strategic merge.

Pure functions on JSON values: each returns a new value and never changes its inputs. Errors
are `PatchError` (the store answers them as 422/400 Status objects). Strategic merge patch is
implemented for what kubectl sends: maps merge, `null` deletes, lists of known kinds (containers,
env, ports, volumes, conditions...) merge by their key, the `$patch`, `$setElementOrder`,
`$deleteFromPrimitiveList` and `$retainKeys` directives are honoured, other lists are replaced.
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    """A patch that cannot be applied to the object (bad path, failed test, bad shape)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _split_pointer(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"JSON pointer {pointer!r} must start with '/'")
    return [_unescape(t) for t in pointer[1:].split("/")]


def _index(container: list[Any], token: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit():
        raise PatchError(f"array index {token!r} is not a number")
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise PatchError(f"array index {index} is out of range (length {len(container)})")
    return index


def _parent(doc: Any, tokens: list[str], pointer: str) -> Any:
    current = doc
    for token in tokens[:-1]:
        if isinstance(current, dict):
            if token not in current:
                raise PatchError(f"path {pointer!r} does not exist: no key {token!r}")
            current = current[token]
        elif isinstance(current, list):
            current = current[_index(current, token, allow_end=False)]
        else:
            raise PatchError(f"path {pointer!r} goes through a scalar at {token!r}")
    return current


def _get(doc: Any, pointer: str) -> Any:
    tokens = _split_pointer(pointer)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path {pointer!r} does not exist")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, allow_end=False)]
    raise PatchError(f"path {pointer!r} does not exist")


def _remove(doc: Any, pointer: str) -> Any:
    tokens = _split_pointer(pointer)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, tokens, pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"cannot remove {pointer!r}: it does not exist")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, allow_end=False))
    raise PatchError(f"cannot remove {pointer!r}: parent is a scalar")


def _add(doc: Any, pointer: str, value: Any) -> Any:
    tokens = _split_pointer(pointer)
    if not tokens:
        return value
    parent = _parent(doc, tokens, pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), value)
    else:
        raise PatchError(f"cannot add at {pointer!r}: parent is a scalar")
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for number, op in enumerate(operations):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"operation {number} must be an object with 'op' and 'path'")
        kind = op["op"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"operation {number} ({kind}) needs a 'value'")
        if kind in ("move", "copy") and "from" not in op:
            raise PatchError(f"operation {number} ({kind}) needs a 'from'")
        doc = _apply_operation(doc, number, op)
    return doc


def _apply_operation(doc: Any, number: int, op: dict[str, Any]) -> Any:
    """``doc`` after the checked JSON patch operation ``op`` (number ``number``)."""
    kind, path = op["op"], op["path"]
    if kind == "add":
        return _add(doc, path, copy.deepcopy(op["value"]))
    if kind == "remove":
        _remove(doc, path)
        return doc
    if kind == "replace":
        _get(doc, path)
        if _split_pointer(path):
            _remove(doc, path)
        return _add(doc, path, copy.deepcopy(op["value"]))
    if kind in ("move", "copy"):
        value = _remove(doc, op["from"]) if kind == "move" else copy.deepcopy(_get(doc, op["from"]))
        return _add(doc, path, value)
    if kind == "test":
        if _get(doc, path) != op["value"]:
            raise PatchError(f"test operation {number} failed at {path!r}")
        return doc
    raise PatchError(f"unknown JSON patch operation {kind!r}")


# Field name -> merge key of lists that strategic merge patch merges element-wise.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "readinessGates": "conditionType",
}
# Lists of scalars that merge as sets.
MERGED_PRIMITIVE_LISTS = frozenset({"finalizers"})


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        sample = next((i for i in items if isinstance(i, dict)), {})
        return "containerPort" if "containerPort" in sample else "port"
    return MERGE_KEYS.get(field)


def _merge_list(field: str, original: Any, patch: list[Any]) -> list[Any]:
    if not isinstance(original, list):
        original = []
    if field in MERGED_PRIMITIVE_LISTS:
        merged = list(original)
        merged.extend(v for v in patch if v not in merged)
        return merged
    key = _merge_key(field, patch + original)
    if key is None:
        return [_strip_directives(copy.deepcopy(v)) for v in patch]
    result = [copy.deepcopy(v) for v in original]
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(f"list {field!r} merges by {key!r}: element {item!r} is not a map")
        if item.get("$patch") == "replace":
            return [_strip_directives(copy.deepcopy(v)) for v in patch if v is not item]
        position = next(
            (
                i
                for i, v in enumerate(result)
                if isinstance(v, dict) and v.get(key) == item.get(key)
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if position is not None:
                result.pop(position)
            continue
        if position is None:
            result.append(_strip_directives(copy.deepcopy(item)))
        else:
            result[position] = strategic_merge_patch(result[position], item)
    return result


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _strip_directives(v)
            for k, v in value.items()
            if not k.startswith("$") and v is not None
        }
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _order(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    """Reorder merged list items as `$setElementOrder` asks; unlisted items go last."""

    def ident(item: Any) -> Any:
        return item.get(key) if key is not None and isinstance(item, dict) else item

    wanted = [ident(o) for o in order]

    def rank(index: int) -> int:
        value = ident(items[index])
        return wanted.index(value) if value in wanted else len(wanted) + index

    return [items[i] for i in sorted(range(len(items)), key=rank)]


def _directive(
    result: dict[str, Any],
    key: str,
    value: Any,
    orders: dict[str, list[Any]],
    retain: list[str] | None,
) -> list[str] | None:
    """Apply the ``$`` directive ``key`` of a patch map to ``result`` (element orders are kept
    in ``orders`` for the end); the ``$retainKeys`` list as it now stands."""
    if key.startswith("$setElementOrder/"):
        orders[key.split("/", 1)[1]] = value if isinstance(value, list) else []
    elif key.startswith("$deleteFromPrimitiveList/"):
        field = key.split("/", 1)[1]
        current = result.get(field)
        if isinstance(current, list):
            result[field] = [v for v in current if v not in (value or [])]
    elif key == "$retainKeys":
        return list(value or [])
    return retain


def _merge_field(result: dict[str, Any], key: str, value: Any) -> None:
    """Merge one ordinary field of a patch map into ``result`` (null deletes it)."""
    if value is None:
        result.pop(key, None)
    elif isinstance(value, list):
        result[key] = _merge_list(key, result.get(key), value)
    elif isinstance(value, dict):
        merged = strategic_merge_patch(result.get(key), value)
        if merged is None:
            result.pop(key, None)
        else:
            result[key] = merged
    else:
        result[key] = value


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Strategic merge patch as kubectl apply/edit/label send it for built-in kinds."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return _strip_directives({k: v for k, v in patch.items() if k != "$patch"})
    if patch.get("$patch") == "delete":
        return None
    result: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    orders: dict[str, list[Any]] = {}
    retain: list[str] | None = None
    for key, value in patch.items():
        if key.startswith("$"):
            retain = _directive(result, key, value, orders, retain)
        else:
            _merge_field(result, key, value)
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            items = result[field]
            result[field] = _order(items, order, _merge_key(field, items + order))
    if retain is not None:
        result = {k: v for k, v in result.items() if k in retain}
    return result
