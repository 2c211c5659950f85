"""The stateful half of the local API server: objects, resourceVersions, watches, deletion.

One `Store` holds every object in memory, keyed by resource (group, plural), namespace and
name. Every write takes the next value of one cluster-wide resourceVersion counter and is
appended to the resource's event history, from which watches are served and resumed; a watch
from a resourceVersion older than the kept history gets 410 Expired. Deletion follows the
Kubernetes rules: finalizers hold an object with a `deletionTimestamp`, Pods bound to a running
node stay until the node runtime confirms with `gracePeriodSeconds=0`, and dependents are
collected through ownerReferences by the controllers (`controllers.py`).

With a `path`, the store is also kept in an SQLite database (`persist.py`): memory stays the
read path, and each write (one public call: `create`, `replace`, `patch`, `delete`, ...) is
committed in one transaction before it returns; its events reach watchers and controllers only
after that commit. A store opened on an existing database continues its objects, its
resourceVersion counter and its watch history. If a commit fails the store goes back to what the
database holds, ends every watch (clients resume from their last resourceVersion) and answers
the write with a 500; nothing of it was seen by anyone.

The store is not thread-safe: all calls happen on the server's event loop (the HTTP scaffold in
`app.py`, the controllers) or through `APIServer.call()` from other threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import re
import secrets
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sfc_k8s.api.conditions import is_ready
from sfc_k8s.api.timestamps import now_rfc3339
from sfc_k8s.local.apiserver import errors, hpaconvert
from sfc_k8s.local.apiserver.builtin_schema import strict_problems
from sfc_k8s.local.apiserver.daemonsets import admit_daemonset
from sfc_k8s.local.apiserver.errors import Cause, StatusError
from sfc_k8s.local.apiserver.hpaconvert import ConversionError
from sfc_k8s.local.apiserver.hpaspec import admit_hpa
from sfc_k8s.local.apiserver.patches import (
    PatchError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from sfc_k8s.local.apiserver.persist import Batch, Database, DatabaseError, Snapshot, StoredEvent
from sfc_k8s.local.apiserver.resources import Registry, ResourceType, types_from_crd
from sfc_k8s.local.apiserver.schema import SchemaInvalidError, StructuralSchema
from sfc_k8s.local.apiserver.selectors import parse_field_selector, parse_label_selector

Obj = dict[str, Any]
ObjKey = tuple[str, str]  # (namespace or "", name)
Predicate = Callable[[Mapping[str, Any]], bool]
P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
DEFAULT_HISTORY = 10_000
DEFAULT_POD_GRACE = 30

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_SYSTEM_META = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
)

PATCH_MERGE = "application/merge-patch+json"
PATCH_JSON = "application/json-patch+json"
PATCH_STRATEGIC = "application/strategic-merge-patch+json"
PATCH_APPLY = "application/apply-patch+yaml"


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(length))


def meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    value = obj.get("metadata")
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Event:
    """One change of one object, as kept in the history and sent to watchers."""

    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj
    old: Obj | None = None


@dataclass(eq=False)
class Watcher:
    """A live watch: matching events pile up in `pending` and set `ready`; None ends it.

    A deque plus an event flag rather than an asyncio.Queue: on Python 3.11,
    `wait_for(queue.get(), timeout)` can drop an item that arrives as the timeout fires, which
    would lose a watch event exactly when a client's `timeoutSeconds` ends its stream.
    """

    key: tuple[str, str]
    predicate: Predicate
    pending: deque[Event | None] = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, event: Event) -> None:
        translated = translate(event, self.predicate)
        if translated is not None:
            self.pending.append(translated)
            self.ready.set()

    def close(self) -> None:
        self.pending.append(None)
        self.ready.set()


def translate(event: Event, predicate: Predicate) -> Event | None:
    """The event a filtered watcher sees: an object moving in or out of its filter is
    ADDED or DELETED for it, like the real watch cache does."""
    now_in = predicate(event.obj)
    if event.type != "MODIFIED" or event.old is None:
        return event if now_in else None
    was_in = predicate(event.old)
    if now_in and was_in:
        return event
    if now_in:
        return Event(event.rv, "ADDED", event.obj)
    if was_in:
        return Event(event.rv, "DELETED", event.obj)
    return None


def _check_name(rtype: ResourceType, name: str) -> Cause | None:
    if rtype.group == "rbac.authorization.k8s.io" and name:
        return _check_path_segment(name)
    pattern, limit = (_DNS_LABEL, 63) if rtype.key == ("", "namespaces") else (_DNS_SUBDOMAIN, 253)
    if not name:
        return Cause(
            "metadata.name",
            "FieldValueRequired",
            "Required value: name or generateName is required",
        )
    if len(name) > limit or not pattern.match(name):
        return Cause(
            "metadata.name",
            "FieldValueInvalid",
            f'Invalid value: "{name}": a lowercase RFC 1123 '
            f"{'label' if limit == 63 else 'subdomain'} must consist of lower case "
            "alphanumeric characters, '-' or '.', and must start and end with an "
            "alphanumeric character",
        )
    return None


def _check_path_segment(name: str) -> Cause | None:
    """RBAC objects may have any name that fits in a URL path segment (``system:discovery``)."""
    for bad in ("/", "%"):
        if bad in name:
            return Cause(
                "metadata.name",
                "FieldValueInvalid",
                f'Invalid value: "{name}": may not contain "{bad}"',
            )
    if name in (".", ".."):
        return Cause(
            "metadata.name", "FieldValueInvalid", f"Invalid value: \"{name}\": may not be '{name}'"
        )
    return None


def _spec_part(obj: Obj, *, with_status: bool) -> dict[str, Any]:
    skip = {"metadata", "apiVersion", "kind"} | ({"status"} if with_status else set())
    return {k: v for k, v in obj.items() if k not in skip}


def _one_write(method: Callable[Concatenate[Store, P], R]) -> Callable[Concatenate[Store, P], R]:
    """Make a public store method one write: one database transaction, events sent after it.

    A write calling another (`preload_crd` -> `create`) joins the outer one."""

    @functools.wraps(method)
    def write(store: Store, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if store._batch is not None:
            return method(store, *args, **kwargs)
        with store._write():
            return method(store, *args, **kwargs)

    return write


class Store:
    """All objects of the emulated cluster and their change history."""

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        history_limit: int = DEFAULT_HISTORY,
        path: Path | None = None,
        synchronous: str = "normal",
    ) -> None:
        """`path`: the SQLite database to keep the store in (None: memory only); opening an
        existing one restores its state. `synchronous`: "normal" or "full" (see persist.py).
        Raises persist.DatabaseError if the database cannot be used."""
        self.registry = registry or Registry.with_builtins()
        self.history_limit = history_limit
        self._rv = 1
        self._objects: dict[tuple[str, str], dict[ObjKey, Obj]] = {}
        self._history: dict[tuple[str, str], deque[Event]] = {}
        self._compacted: dict[tuple[str, str], int] = {}
        self._watchers: dict[tuple[str, str], set[Watcher]] = {}
        self._uids: dict[str, tuple[tuple[str, str], ObjKey]] = {}
        # owner uid -> the objects naming it in their ownerReferences (for the GC and the
        # controllers: a Deployment's pods without a pass over every pod).
        self._dependents: dict[str, set[tuple[tuple[str, str], ObjKey]]] = {}
        # (resource, object) -> its rank in the creation order (what `objects` lists by).
        self._created: dict[tuple[tuple[str, str], ObjKey], int] = {}
        self._creations = 0
        self._schemas: dict[tuple[str, str, str], StructuralSchema] = {}
        self.listeners: list[Callable[[tuple[str, str], Event], None]] = []
        self._trust_schemas = False
        # The write in progress (None between writes), what it will send once committed, and
        # the watches it ended (closed after its events are sent).
        self._batch: Batch | None = None
        self._unsent: list[tuple[tuple[str, str], Event, tuple[Watcher, ...]]] = []
        self._ending: list[Watcher] = []
        self._database = Database(path, synchronous=synchronous) if path is not None else None
        with self._write():
            if self._database is not None:
                self._restore(self._database.load())
            ns_type = self.resource("", "v1", "namespaces")
            for name in DEFAULT_NAMESPACES:
                if self.find(ns_type.key, None, name) is None:
                    self.create(ns_type, None, {"metadata": {"name": name}})

    # ----- persistence ---------------------------------------------------------------------

    @property
    def database(self) -> Database | None:
        return self._database

    def close(self) -> None:
        """Close the database (the store must not be written afterwards)."""
        if self._database is not None:
            self._database.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One write: gather its changes, commit them, then send its events.

        Changes made before an error are committed too (memory already holds them)."""
        self._batch = Batch()
        try:
            yield
        finally:
            batch, self._batch = self._batch, None
            self._commit_batch(batch)

    def _commit_batch(self, batch: Batch) -> None:
        unsent, self._unsent = self._unsent, []
        ending, self._ending = self._ending, []
        if self._database is not None:
            try:
                self._database.write(batch)
            except DatabaseError as err:
                self._revert()
                for watcher in ending:
                    watcher.close()
                raise errors.internal(str(err)) from err
        for key, event, watchers in unsent:
            for watcher in watchers:
                watcher.offer(event)
            for listener in list(self.listeners):
                listener(key, event)
        for watcher in ending:
            watcher.close()

    def _pending(self) -> Batch:
        if self._batch is None:
            raise RuntimeError("store changed outside a write (a method lacks @_one_write)")
        return self._batch

    def _revert(self) -> None:
        """Go back to what the database holds after a failed commit; end every watch."""
        assert self._database is not None
        for crd in self.objects(("apiextensions.k8s.io", "customresourcedefinitions")):
            self.registry.unregister_crd(meta(crd).get("name", ""))
        for table in (self._objects, self._history, self._compacted, self._uids, self._schemas):
            table.clear()
        self._created.clear()
        self._dependents.clear()
        self._batch = Batch()
        try:
            self._restore(self._database.load())
        finally:
            self._batch = None
        self.close_watches()

    def _restore(self, snapshot: Snapshot) -> None:
        """Take the state of a database (history beyond `history_limit` is dropped)."""
        self._rv = max(self._rv if snapshot.empty else snapshot.rv, 1)
        for key, obj in snapshot.objects:
            md = meta(obj)
            name = (md.get("namespace", ""), md["name"])
            self._objects.setdefault(key, {})[name] = obj
            self._uids[md["uid"]] = (key, name)
            self._rank(key, name)
            self._index_owners(key, name, None, obj)
            if key == ("apiextensions.k8s.io", "customresourcedefinitions"):
                self._restore_crd(obj)
        self._compacted.update(snapshot.compacted)
        for stored in snapshot.events:
            event = Event(stored.rv, stored.type, stored.obj, stored.old)
            self._keep(stored.resource, event)

    def _restore_crd(self, crd: Obj) -> None:
        """Serve a stored CRD's resources again (accepted once: not checked again)."""
        types = types_from_crd(crd)
        self.registry.register_crd(meta(crd).get("name", ""), types)
        for rtype in types:
            if rtype.schema is not None:
                key = (rtype.group, rtype.version, rtype.plural)
                self._schemas[key] = StructuralSchema(rtype.schema)

    # ----- lookups -------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    def resource(self, group: str, version: str, plural: str) -> ResourceType:
        rtype = self.registry.get(group, version, plural)
        if rtype is None:
            raise errors.resource_not_found(f"{group}/{version}/{plural}")
        return rtype

    def schema_of(self, rtype: ResourceType) -> StructuralSchema | None:
        """The structural schema custom objects of `rtype` are checked with (None: none)."""
        return self._schemas.get((rtype.group, rtype.version, rtype.plural))

    def objects(self, key: tuple[str, str]) -> list[Obj]:
        """All objects of a resource, oldest first (no copies: do not modify them)."""
        return list(self._objects.get(key, {}).values())

    def find(self, key: tuple[str, str], namespace: str | None, name: str) -> Obj | None:
        return self._objects.get(key, {}).get((namespace or "", name))

    def key_of(self, uid: str) -> tuple[str, str]:
        """The resource (group, plural) of the object with this uid ('', '' if none)."""
        where = self._uids.get(uid)
        return where[0] if where is not None else ("", "")

    def by_uid(self, uid: str) -> Obj | None:
        where = self._uids.get(uid)
        if where is None:
            return None
        return self._objects.get(where[0], {}).get(where[1])

    def all_objects(self) -> Iterator[tuple[tuple[str, str], Obj]]:
        for key, table in list(self._objects.items()):
            for obj in list(table.values()):
                yield key, obj

    def present(self, rtype: ResourceType, obj: Obj) -> Obj:
        """The object as seen through `rtype`'s version (CRD versions share storage; built-in
        versions of other shapes are converted, `CONVERSIONS`)."""
        if obj.get("apiVersion") == rtype.api_version:
            return obj
        conversion = CONVERSIONS.get((rtype.key, rtype.version))
        if conversion is not None:
            return conversion[0](obj)
        return {**obj, "apiVersion": rtype.api_version}

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self.find(rtype.key, namespace if rtype.namespaced else None, name)
        if obj is None:
            raise errors.not_found(rtype.plural, rtype.group, name)
        return self.present(rtype, obj)

    def list_objects(
        self,
        rtype: ResourceType,
        namespace: str | None,
        *,
        label_selector: str = "",
        field_selector: str = "",
    ) -> tuple[list[Obj], int]:
        predicate = self.predicate(rtype, namespace, label_selector, field_selector)
        items = [self.present(rtype, o) for o in self.objects(rtype.key) if predicate(o)]
        items.sort(key=lambda o: (meta(o).get("namespace", ""), meta(o).get("name", "")))
        return items, self._rv

    @staticmethod
    def predicate(
        rtype: ResourceType, namespace: str | None, label_selector: str, field_selector: str
    ) -> Predicate:
        labels = parse_label_selector(label_selector) if label_selector else None
        fields = parse_field_selector(field_selector) if field_selector else None
        scoped = namespace if rtype.namespaced else None

        def check(obj: Mapping[str, Any]) -> bool:
            md = meta(obj)
            if scoped is not None and md.get("namespace") != scoped:
                return False
            if labels is not None and not labels(md.get("labels") or {}):
                return False
            return fields is None or fields(obj)

        return check

    # ----- watches -------------------------------------------------------------------------

    def watch(
        self, rtype: ResourceType, predicate: Predicate, resource_version: str | None
    ) -> tuple[list[Event], Watcher]:
        """Events to send first, and a registered watcher for later ones (call `unwatch`)."""
        key = rtype.key
        if resource_version in (None, "", "0"):
            initial = [Event(self._rv, "ADDED", o) for o in self.objects(key) if predicate(o)]
        else:
            try:
                since = int(resource_version)
            except ValueError as err:
                raise errors.bad_request(
                    f"invalid resourceVersion {resource_version!r}: not a number"
                ) from err
            oldest = self._compacted.get(key, 0)
            if since < oldest:
                raise errors.gone(since, oldest)
            initial = []
            for event in self._history.get(key, ()):
                if event.rv > since:
                    translated = translate(event, predicate)
                    if translated is not None:
                        initial.append(translated)
        watcher = Watcher(key, predicate)
        self._watchers.setdefault(key, set()).add(watcher)
        return initial, watcher

    def history(self, key: tuple[str, str]) -> list[Event]:
        """The kept change events of a resource, oldest first."""
        return list(self._history.get(key, ()))

    def watcher_count(self, key: tuple[str, str]) -> int:
        """How many watches of a resource are open (tests wait for a client to watch)."""
        return len(self._watchers.get(key, ()))

    def close_watches(self) -> None:
        """End every open watch (the server is stopping)."""
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.close()
        self._watchers.clear()

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.get(watcher.key, set()).discard(watcher)

    def _emit(self, key: tuple[str, str], event: Event) -> None:
        batch = self._pending()
        batch.events.append(StoredEvent(event.rv, key, event.type, event.obj, event.old))
        self._keep(key, event)
        self._unsent.append((key, event, tuple(self._watchers.get(key, ()))))

    def _keep(self, key: tuple[str, str], event: Event) -> None:
        """Append to the history of `key`, dropping its oldest event beyond the limit."""
        history = self._history.setdefault(key, deque())
        while len(history) >= self.history_limit:
            dropped = history.popleft().rv
            self._compacted[key] = dropped
            batch = self._pending()
            batch.dropped.append(dropped)
            batch.compacted[key] = dropped
        history.append(event)

    def _next_rv(self) -> int:
        self._rv += 1
        self._pending().rv = self._rv
        return self._rv

    # ----- writes --------------------------------------------------------------------------

    def _commit(self, rtype: ResourceType, obj: Obj, old: Obj | None) -> Obj:
        md = meta(obj)
        rv = self._next_rv()
        md["resourceVersion"] = str(rv)
        key = (md.get("namespace", ""), md["name"])
        batch = self._pending()
        batch.objects[(rtype.key, key)] = obj
        if old is None:
            batch.created[(rtype.key, key)] = rv
        self._objects.setdefault(rtype.key, {})[key] = obj
        self._uids[md["uid"]] = (rtype.key, key)
        self._rank(rtype.key, key)
        self._index_owners(rtype.key, key, old, obj)
        self._emit(rtype.key, Event(rv, "ADDED" if old is None else "MODIFIED", obj, old))
        return obj

    def _index_owners(
        self, rtype_key: tuple[str, str], key: ObjKey, old: Obj | None, new: Obj | None
    ) -> None:
        before = {str(r.get("uid")) for r in meta(old or {}).get("ownerReferences") or []}
        after = {str(r.get("uid")) for r in meta(new or {}).get("ownerReferences") or []}
        for uid in before - after:
            entries = self._dependents.get(uid)
            if entries is not None:
                entries.discard((rtype_key, key))
                if not entries:
                    del self._dependents[uid]
        for uid in after - before:
            self._dependents.setdefault(uid, set()).add((rtype_key, key))

    def _rank(self, rtype_key: tuple[str, str], key: ObjKey) -> None:
        if (rtype_key, key) not in self._created:
            self._creations += 1
            self._created[(rtype_key, key)] = self._creations

    def controlled(self, rtype_key: tuple[str, str], uid: str) -> list[Obj]:
        """The objects of a resource whose controller (the ownerReference marked `controller`)
        is `uid`, oldest first, from the owner index (no pass over the resource)."""
        found = []
        for key, obj in self.dependents(uid):
            if key != rtype_key:
                continue
            refs = meta(obj).get("ownerReferences") or []
            if any(r.get("controller") and str(r.get("uid")) == uid for r in refs):
                md = meta(obj)
                rank = self._created.get((key, (md.get("namespace", ""), md["name"])), 0)
                found.append((rank, obj))
        found.sort(key=lambda rank_obj: rank_obj[0])
        return [obj for _, obj in found]

    def dependents(self, uid: str) -> list[tuple[tuple[str, str], Obj]]:
        """The objects that name `uid` in their ownerReferences."""
        result = []
        for rtype_key, key in list(self._dependents.get(uid, ())):
            obj = self._objects.get(rtype_key, {}).get(key)
            if obj is not None:
                result.append((rtype_key, obj))
        return result

    def _remove(self, rtype_key: tuple[str, str], obj: Obj) -> Obj:
        md = meta(obj)
        key = (md.get("namespace", ""), md["name"])
        self._pending().objects[(rtype_key, key)] = None
        self._objects.get(rtype_key, {}).pop(key, None)
        self._created.pop((rtype_key, key), None)
        self._uids.pop(md.get("uid", ""), None)
        self._index_owners(rtype_key, key, obj, None)
        rv = self._next_rv()
        gone = {**obj, "metadata": {**md, "resourceVersion": str(rv)}}
        self._emit(rtype_key, Event(rv, "DELETED", gone))
        if rtype_key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._drop_crd(gone)
        return gone

    @_one_write
    def create(
        self,
        rtype: ResourceType,
        namespace: str | None,
        body: Any,
        *,
        dry_run: bool = False,
        strict: bool = False,
    ) -> Obj:
        """Create an object; `strict` rejects fields a CRD schema does not declare (400)."""
        if not isinstance(body, dict):
            raise errors.bad_request("the body of a create must be a JSON object")
        obj = copy.deepcopy(body)
        self._check_type(rtype, obj)
        md = obj.setdefault("metadata", {})
        if not isinstance(md, dict):
            raise errors.bad_request("metadata must be an object")
        namespace = self._place(rtype, namespace, md)
        name = md.get("name", "")
        cause = _check_name(rtype, name)
        if cause is not None:
            raise errors.invalid(rtype.kind, rtype.group, name, [cause])
        if self.find(rtype.key, namespace if rtype.namespaced else None, name) is not None:
            raise errors.already_exists(rtype.plural, rtype.group, name)
        if rtype.namespaced:
            self._check_namespace(rtype, namespace or "", name)
        for item in (
            "resourceVersion",
            "selfLink",
            "managedFields",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            md.pop(item, None)
        md["uid"] = str(uuid.uuid4())
        md["creationTimestamp"] = now_rfc3339()
        md["generation"] = 1
        if rtype.has_status and not rtype.builtin:
            obj.pop("status", None)
        obj = self._admit(rtype, obj, None, strict=strict)
        if dry_run:
            return self.present(rtype, obj)
        if rtype.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._register_crd(obj)
        return self.present(rtype, self._commit(self._storage_type(rtype), obj, None))

    def _place(self, rtype: ResourceType, namespace: str | None, md: dict[str, Any]) -> str | None:
        """Set a new object's namespace (returned) and its name if generated."""
        if rtype.namespaced:
            body_ns = md.get("namespace")
            if namespace and body_ns and body_ns != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            namespace = namespace or body_ns or "default"
            md["namespace"] = namespace
        else:
            md.pop("namespace", None)
        if not md.get("name") and md.get("generateName"):
            for _ in range(20):
                md["name"] = f"{md['generateName']}{random_suffix()}"
                if self.find(rtype.key, namespace, md["name"]) is None:
                    break
        return namespace

    @_one_write
    def replace(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        subresource: str = "",
        dry_run: bool = False,
        strict: bool = False,
    ) -> Obj:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of an update must be a JSON object")
        current = self.get(rtype, namespace, name)
        body_md = meta(body)
        if body_md.get("name") and body_md["name"] != name:
            raise errors.bad_request(
                f"the name of the object ({body_md['name']}) does not match the name on the "
                f"URL ({name})"
            )
        wanted_rv = body_md.get("resourceVersion")
        if wanted_rv and wanted_rv != meta(current).get("resourceVersion"):
            raise errors.stale(rtype.plural, rtype.group, name)
        return self._update(
            rtype, current, copy.deepcopy(body), subresource, dry_run=dry_run, strict=strict
        )

    @_one_write
    def patch(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        patch_type: str,
        patch: Any,
        *,
        subresource: str = "",
        dry_run: bool = False,
        strict: bool = False,
    ) -> Obj:
        current = self.get(rtype, namespace, name)
        base = copy.deepcopy(current)  # stored objects are never modified in place
        try:
            if patch_type == PATCH_MERGE:
                if not isinstance(patch, dict):
                    raise PatchError("a merge patch must be a JSON object")
                patched = merge_patch(base, patch)
            elif patch_type == PATCH_JSON:
                patched = json_patch(base, patch)
            elif patch_type in (PATCH_STRATEGIC, PATCH_APPLY):
                if not isinstance(patch, dict):
                    raise PatchError("a strategic merge patch must be a JSON object")
                if not rtype.builtin and patch_type == PATCH_STRATEGIC:
                    raise errors.unsupported_media_type(patch_type)
                patched = strategic_merge_patch(base, patch)
            else:
                raise errors.unsupported_media_type(patch_type)
        except PatchError as err:
            raise errors.StatusError(
                422, "Invalid", f"the patch could not be applied: {err}"
            ) from err
        if not isinstance(patched, dict):
            raise errors.bad_request("the patch must leave a JSON object")
        wanted_rv = meta(patched).get("resourceVersion")
        if wanted_rv and wanted_rv != meta(current).get("resourceVersion"):
            raise errors.stale(rtype.plural, rtype.group, name)
        return self._update(rtype, current, patched, subresource, dry_run=dry_run, strict=strict)

    def _stored(self, rtype: ResourceType, current: Obj) -> Obj:
        """The stored object of ``current``, which may be its view in a converted version."""
        if (rtype.key, rtype.version) not in CONVERSIONS:
            return current
        md = meta(current)
        return self.find(rtype.key, md.get("namespace"), md.get("name", "")) or current

    def _update(
        self,
        rtype: ResourceType,
        current: Obj,
        new: Obj,
        subresource: str,
        *,
        dry_run: bool,
        strict: bool = False,
    ) -> Obj:
        self._check_type(rtype, new)
        current = self._stored(rtype, current)
        cur_md = meta(current)
        if subresource == "status":
            obj = copy.deepcopy(current)
            if "status" in new:
                obj["status"] = new["status"]
            else:
                obj.pop("status", None)
        elif subresource == "finalize":  # namespaces: only spec.finalizers changes
            obj = copy.deepcopy(current)
            obj.setdefault("spec", {})["finalizers"] = (new.get("spec") or {}).get("finalizers", [])
        else:
            obj = new
            if rtype.has_status:
                if "status" in current:
                    obj["status"] = copy.deepcopy(current["status"])
                else:
                    obj.pop("status", None)
            md = obj.setdefault("metadata", {})
            if not isinstance(md, dict):
                raise errors.bad_request("metadata must be an object")
            for item in _SYSTEM_META:
                if item in cur_md:
                    md[item] = cur_md[item]
                else:
                    md.pop(item, None)
            md["name"] = cur_md["name"]
            if "namespace" in cur_md:
                md["namespace"] = cur_md["namespace"]
            md.pop("managedFields", None)
            md.pop("selfLink", None)
            added = set(md.get("finalizers") or []) - set(cur_md.get("finalizers") or [])
            if cur_md.get("deletionTimestamp") and added:
                raise errors.invalid(
                    rtype.kind,
                    rtype.group,
                    cur_md["name"],
                    [
                        Cause(
                            "metadata.finalizers",
                            "FieldValueForbidden",
                            "Forbidden: no new finalizers can be added if the object is being "
                            f"deleted, found new finalizers {sorted(added)!r}",
                        )
                    ],
                )
        obj["apiVersion"], obj["kind"] = current["apiVersion"], current["kind"]
        meta(obj)["resourceVersion"] = cur_md.get("resourceVersion")
        part = "status" if subresource == "status" else None
        obj = self._admit(rtype, obj, current, strict=strict, part=part)
        with_status = rtype.has_status
        if _spec_part(obj, with_status=with_status) != _spec_part(current, with_status=with_status):
            meta(obj)["generation"] = int(cur_md.get("generation", 1)) + 1
        if obj == current:
            return self.present(rtype, current)
        if dry_run:
            return self.present(rtype, obj)
        if rtype.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._register_crd(obj)
        return self.present(rtype, self._store_update(rtype, obj, current))

    def _store_update(self, rtype: ResourceType, obj: Obj, current: Obj) -> Obj:
        """Commit an update, or remove the object if it was only waiting for finalizers."""
        md = meta(obj)
        released = md.get("deletionTimestamp") and not md.get("finalizers")
        if released and not md.get("deletionGracePeriodSeconds"):
            self._commit(self._storage_type(rtype), obj, current)
            return self._remove(rtype.key, obj)
        return self._commit(self._storage_type(rtype), obj, current)

    @_one_write
    def update_internal(self, rtype: ResourceType, obj: Obj) -> Obj:
        """A controller's write of a whole object (status included); no-op when unchanged."""
        current = self.find(rtype.key, meta(obj).get("namespace"), meta(obj)["name"])
        if current is None:
            raise errors.not_found(rtype.plural, rtype.group, meta(obj)["name"])
        if obj == current:
            return current
        return self._store_update(rtype, obj, current)

    @_one_write
    def delete(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        dry_run: bool = False,
    ) -> Obj:
        options = options or {}
        current = self.get(rtype, namespace, name)
        cur_md = meta(current)
        _check_preconditions(rtype, cur_md, options.get("preconditions") or {})
        if dry_run:
            return current
        policy = options.get("propagationPolicy") or "Background"
        if options.get("orphanDependents") is True:
            policy = "Orphan"
        if policy == "Orphan":
            self._orphan_dependents(cur_md.get("uid", ""))
        obj = copy.deepcopy(current)
        md = meta(obj)
        finalizers = list(md.get("finalizers") or [])
        if policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        grace = 0
        if rtype.key == ("", "pods"):
            grace = self._pod_grace(obj, options)
        if md.get("deletionTimestamp"):
            return self._delete_again(rtype, obj, current, grace)
        if rtype.key == ("", "namespaces"):
            obj.setdefault("status", {})["phase"] = "Terminating"
            md["deletionTimestamp"] = now_rfc3339()
            md["deletionGracePeriodSeconds"] = 0
            md["finalizers"] = finalizers
            if not finalizers:
                md.pop("finalizers")
            return self.present(rtype, self._commit(rtype, obj, current))
        if finalizers or grace > 0:
            if finalizers:
                md["finalizers"] = finalizers
            md["deletionTimestamp"] = now_rfc3339(grace)
            md["deletionGracePeriodSeconds"] = grace
            md["generation"] = int(md.get("generation", 1)) + 1
            return self.present(rtype, self._commit(rtype, obj, current))
        return self.present(rtype, self._remove(rtype.key, current))

    def _delete_again(self, rtype: ResourceType, obj: Obj, current: Obj, grace: int) -> Obj:
        """Delete an object already terminating: only a shorter grace period (the kubelet's
        0) moves it on."""
        md = meta(obj)
        if grace >= int(md.get("deletionGracePeriodSeconds") or 0):
            return current
        md["deletionGracePeriodSeconds"] = grace
        md["deletionTimestamp"] = now_rfc3339(grace)
        if grace == 0 and not md.get("finalizers"):
            self._commit(rtype, obj, current)
            return self.present(rtype, self._remove(rtype.key, obj))
        return self.present(rtype, self._commit(rtype, obj, current))

    @_one_write
    def remove_namespace_if_empty(self, name: str) -> bool:
        """Finish a terminating namespace once nothing is left in it (namespace controller)."""
        ns_type = self.resource("", "v1", "namespaces")
        current = self.find(ns_type.key, None, name)
        if current is None or not meta(current).get("deletionTimestamp"):
            return False
        for _, obj in self.all_objects():
            if meta(obj).get("namespace") == name:
                return False
        if meta(current).get("finalizers"):
            return False
        self._remove(ns_type.key, current)
        return True

    def _pod_grace(self, pod: Obj, options: Mapping[str, Any]) -> int:
        """The grace period a pod deletion gets: 0 when no running node would honour it."""
        requested = options.get("gracePeriodSeconds")
        spec = pod.get("spec") or {}
        grace = int(
            requested
            if requested is not None
            else spec.get("terminationGracePeriodSeconds", DEFAULT_POD_GRACE)
        )
        node = self.find(("", "nodes"), None, spec.get("nodeName") or "")
        if grace > 0 and (node is None or not is_ready(node)):
            return 0
        return max(grace, 0)

    def _orphan_dependents(self, uid: str) -> None:
        for key, obj in self.dependents(uid):
            refs = meta(obj).get("ownerReferences") or []
            new = copy.deepcopy(obj)
            meta(new)["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
            if not meta(new)["ownerReferences"]:
                meta(new).pop("ownerReferences")
            rtype = self.registry.by_key(key)
            if rtype is not None:
                self._commit(rtype, new, obj)

    # ----- admission -----------------------------------------------------------------------

    def _storage_type(self, rtype: ResourceType) -> ResourceType:
        return self.registry.by_key(rtype.key) or rtype

    def _check_type(self, rtype: ResourceType, obj: Obj) -> None:
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if kind and kind != rtype.kind:
            raise errors.bad_request(
                f"the kind of the object ({kind}) does not match the resource {rtype.plural} "
                f"(kind {rtype.kind})"
            )
        if api_version and api_version != rtype.api_version:
            served = self.registry.get(rtype.group, api_version.rpartition("/")[2], rtype.plural)
            if served is None or api_version.rpartition("/")[0] != rtype.group:
                raise errors.bad_request(
                    f"the API version in the data ({api_version}) does not match the expected "
                    f"API version ({rtype.api_version})"
                )
        storage = self._storage_type(rtype)
        version = str(api_version or rtype.api_version).rpartition("/")[2]
        conversion = CONVERSIONS.get((rtype.key, version))
        if conversion is not None and version != storage.version:
            try:
                converted = conversion[1](obj)
            except ConversionError as err:
                raise errors.bad_request(str(err)) from err
            obj.clear()
            obj.update(converted)
        obj["apiVersion"], obj["kind"] = storage.api_version, rtype.kind

    def _check_namespace(self, rtype: ResourceType, namespace: str, name: str) -> None:
        ns = self.find(("", "namespaces"), None, namespace)
        if ns is None:
            raise errors.not_found("namespaces", "", namespace)
        if meta(ns).get("deletionTimestamp"):
            raise errors.forbidden(
                rtype.plural,
                rtype.group,
                name,
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated",
            )

    def _admit(
        self,
        rtype: ResourceType,
        obj: Obj,
        old: Obj | None,
        *,
        strict: bool,
        part: str | None = None,
    ) -> Obj:
        """Defaulting and validation of a create or update, per kind; `part` ("status") is the
        only part a subresource write may change."""
        if not rtype.builtin:
            return self._admit_custom(rtype, obj, old, strict=strict, part=part)
        if strict:
            problems = strict_problems(obj)
            # Only what this request brings is refused: a field some earlier, non-strict writer
            # (a controller, the node runtime) stored is not the client's mistake.
            if problems and (old is None or strict_problems(old) != problems):
                raise errors.bad_request(
                    f'{rtype.kind} in version "{rtype.version}" cannot be handled as a '
                    f"{rtype.kind}: strict decoding error: {'; '.join(problems)}"
                )
        admit = _BUILTIN_ADMISSION.get(rtype.key)
        if admit is not None:
            causes = admit(obj, old)
            if causes:
                raise errors.invalid(rtype.kind, rtype.group, meta(obj).get("name", ""), causes)
        return obj

    def _admit_custom(
        self, rtype: ResourceType, obj: Obj, old: Obj | None, *, strict: bool, part: str | None
    ) -> Obj:
        schema = self._schemas.get((rtype.group, rtype.version, rtype.plural))
        if schema is None:
            return obj
        pruned, removed = schema.prune(obj)
        if strict and removed:
            unknown = ", ".join(f'unknown field "{path}"' for path in removed)
            raise errors.bad_request(
                f'{rtype.kind} in version "{rtype.version}" cannot be handled as a {rtype.kind}: '
                f"strict decoding error: {unknown}"
            )
        obj = schema.apply_defaults(pruned)
        causes = schema.validate(obj, old, part=part)
        if causes:
            raise errors.invalid(rtype.kind, rtype.group, meta(obj).get("name", ""), causes)
        return obj

    # ----- CRDs ----------------------------------------------------------------------------

    @_one_write
    def preload_crd(self, crd: Obj) -> Obj:
        """Register a CRD shipped with the server (its schemas are not re-checked)."""
        crd_type = self.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        self._trust_schemas = True
        try:
            return self.create(crd_type, None, crd)
        finally:
            self._trust_schemas = False

    def _register_crd(self, crd: Obj) -> None:
        name = meta(crd).get("name", "")
        types = types_from_crd(crd)
        causes = _check_crd(crd)
        schemas: dict[tuple[str, str, str], StructuralSchema] = {}
        for rtype in types:
            if rtype.schema is None:
                continue
            key = (rtype.group, rtype.version, rtype.plural)
            previous = self._schemas.get(key)
            if previous is not None and previous.schema == rtype.schema:
                schemas[key] = previous  # same schema: keep its compiled rules
                continue
            schema = StructuralSchema(rtype.schema)
            try:
                if not self._trust_schemas:
                    schema.check()
            except SchemaInvalidError as err:
                causes.append(
                    Cause(
                        f"spec.versions[{rtype.version}].schema.openAPIV3Schema",
                        "FieldValueInvalid",
                        f"Invalid value: {err}",
                    )
                )
            schemas[key] = schema
        if causes:
            raise errors.invalid("CustomResourceDefinition", "apiextensions.k8s.io", name, causes)
        for old in self.registry.unregister_crd(name):
            self._schemas.pop((old.group, old.version, old.plural), None)
        self.registry.register_crd(name, types)
        self._schemas.update(schemas)
        spec = crd.get("spec", {})
        crd["status"] = {
            "acceptedNames": spec.get("names", {}),
            "storedVersions": [v["name"] for v in spec.get("versions", []) if v.get("storage")],
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                    "lastTransitionTime": now_rfc3339(),
                },
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                    "lastTransitionTime": now_rfc3339(),
                },
            ],
        }

    def _drop_crd(self, crd: Obj) -> None:
        name = meta(crd).get("name", "")
        for old in self.registry.unregister_crd(name):
            self._schemas.pop((old.group, old.version, old.plural), None)
            for obj in self.objects(old.key):
                self._remove(old.key, obj)
            self._ending.extend(self._watchers.pop(old.key, set()))
            self._history.pop(old.key, None)
            self._compacted[old.key] = self._rv
            batch = self._pending()
            batch.drop_resource(old.key)
            batch.compacted[old.key] = self._rv


def _check_preconditions(
    rtype: ResourceType, md: Mapping[str, Any], pre: Mapping[str, Any]
) -> None:
    """A delete's preconditions (uid, resourceVersion) against the stored metadata."""
    name = md.get("name", "")
    if pre.get("uid") and pre["uid"] != md.get("uid"):
        raise errors.conflict(
            rtype.plural,
            rtype.group,
            name,
            f"Precondition failed: UID in precondition: {pre['uid']}, "
            f"UID in object meta: {md.get('uid')}",
        )
    if pre.get("resourceVersion") and pre["resourceVersion"] != md.get("resourceVersion"):
        raise errors.stale(rtype.plural, rtype.group, name)


def _check_crd(crd: Obj) -> list[Cause]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    causes = []
    for field_name in ("plural", "kind"):
        if not names.get(field_name):
            causes.append(Cause(f"spec.names.{field_name}", "FieldValueRequired", "Required value"))
    if not spec.get("group"):
        causes.append(Cause("spec.group", "FieldValueRequired", "Required value"))
    expected = f"{names.get('plural')}.{spec.get('group')}"
    if meta(crd).get("name") != expected:
        causes.append(
            Cause(
                "metadata.name",
                "FieldValueInvalid",
                f'Invalid value: "{meta(crd).get("name")}": must be '
                f'spec.names.plural+"."+spec.group ({expected})',
            )
        )
    versions = spec.get("versions") or []
    if not versions:
        causes.append(Cause("spec.versions", "FieldValueRequired", "Required value"))
    elif sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(
            Cause(
                "spec.versions",
                "FieldValueInvalid",
                "Invalid value: must have exactly one version marked as storage",
            )
        )
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(
            Cause(
                "spec.scope",
                "FieldValueNotSupported",
                'Unsupported value: supported values: "Cluster", "Namespaced"',
            )
        )
    return causes


def _admit_pod(pod: Obj, old: Obj | None) -> list[Cause]:
    spec = pod.setdefault("spec", {})
    causes = []
    containers = spec.get("containers")
    if not containers:
        causes.append(Cause("spec.containers", "FieldValueRequired", "Required value"))
    for index, container in enumerate(containers or []):
        if not isinstance(container, dict) or not container.get("name"):
            causes.append(
                Cause(f"spec.containers[{index}].name", "FieldValueRequired", "Required value")
            )
        elif not container.get("image"):
            causes.append(
                Cause(f"spec.containers[{index}].image", "FieldValueRequired", "Required value")
            )
    if causes:
        return causes
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", DEFAULT_POD_GRACE)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    for container in spec["containers"]:
        container.setdefault("imagePullPolicy", "IfNotPresent")
        container.setdefault("terminationMessagePolicy", "File")
    if old is None:
        pod["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    elif old.get("spec", {}).get("nodeName") and spec.get("nodeName") != old["spec"]["nodeName"]:
        causes.append(
            Cause(
                "spec.nodeName",
                "FieldValueForbidden",
                "Forbidden: pod updates may not change fields other than "
                "`spec.containers[*].image`, `spec.activeDeadlineSeconds` and "
                "`spec.tolerations`",
            )
        )
    return causes


def _admit_deployment(deploy: Obj, old: Obj | None) -> list[Cause]:
    spec = deploy.setdefault("spec", {})
    causes = []
    spec.setdefault("replicas", 1)
    spec.setdefault(
        "strategy",
        {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
    )
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    selector = spec.get("selector")
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not isinstance(selector, dict) or not selector:
        causes.append(Cause("spec.selector", "FieldValueRequired", "Required value"))
    else:
        from sfc_k8s.local.apiserver.selectors import match_label_selector_object

        if not match_label_selector_object(selector, labels):
            causes.append(
                Cause(
                    "spec.template.metadata.labels",
                    "FieldValueInvalid",
                    f"Invalid value: {labels!r}: `selector` does not match template `labels`",
                )
            )
        if old is not None and selector != (old.get("spec") or {}).get("selector"):
            causes.append(
                Cause("spec.selector", "FieldValueInvalid", "Invalid value: field is immutable")
            )
    if not isinstance(spec.get("replicas"), int) or spec["replicas"] < 0:
        causes.append(
            Cause(
                "spec.replicas",
                "FieldValueInvalid",
                f"Invalid value: {spec.get('replicas')!r}: must be greater than or equal to 0",
            )
        )
    containers = (template.get("spec") or {}).get("containers")
    if not containers:
        causes.append(
            Cause("spec.template.spec.containers", "FieldValueRequired", "Required value")
        )
    return causes


def _admit_namespace(ns: Obj, old: Obj | None) -> list[Cause]:
    if old is None:
        ns["spec"] = {"finalizers": ["kubernetes"]}
        ns["status"] = {"phase": "Active"}
        meta(ns).setdefault("labels", {})["kubernetes.io/metadata.name"] = meta(ns)["name"]
    return []


# (resource key, served version) -> (from storage, to storage), for the built-in resources
# served in versions of another shape than their storage version's.
Conversion = tuple[Callable[[Obj], Obj], Callable[[Obj], Obj]]
CONVERSIONS: dict[tuple[tuple[str, str], str], Conversion] = {
    (("autoscaling", "horizontalpodautoscalers"), "v1"): (hpaconvert.to_v1, hpaconvert.from_v1),
}

_BUILTIN_ADMISSION: dict[tuple[str, str], Callable[[Obj, Obj | None], list[Cause]]] = {
    ("", "pods"): _admit_pod,
    ("apps", "deployments"): _admit_deployment,
    ("apps", "daemonsets"): admit_daemonset,
    ("", "namespaces"): _admit_namespace,
    ("autoscaling", "horizontalpodautoscalers"): admit_hpa,
}

__all__ = ["Event", "StatusError", "Store", "Watcher"]
