"""The local API server's database: the durable copy of the store, in one SQLite file.

`Store` (store.py) keeps serving reads, lists and watches from memory; this module is its
write-behind. Every API write gathers its changes in a `Batch` (objects written or removed,
change events appended to or dropped from the kept history, the resourceVersion counter) and
`Database.write` commits the batch in one transaction before the write is answered. At start,
`Database.load` gives back what the last run committed, so a restarted API server has every
object, the same resourceVersions and the same watch history, as k3s has from its SQLite file.

The file (schema version `SCHEMA_VERSION`, tagged with `APPLICATION_ID`) holds:
  objects   (grp, plural, ns, name) -> created (order of creation), body (JSON)
  events    rv -> grp, plural, type, body, old (the kept history the watches resume from)
  compacted (grp, plural) -> the resourceVersion below which that history was dropped
  counters  'rv' -> the last resourceVersion given out, when no kept event has it (the
            counter is the larger of this and the newest event's)

Journal mode WAL, locking mode EXCLUSIVE (a second server on the same file is refused);
`synchronous` NORMAL by default (a commit is written to the WAL before the
write is answered: it survives a crash of any process; a power loss can lose the commits since
the last checkpoint, never corrupt the file) or FULL (fsync on every commit). A file that is not
such a database, or is damaged, gives `DatabaseError` with one line saying what to do; nothing
is written to it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
ResourceKey = tuple[str, str]  # (group, plural)
ObjKey = tuple[str, str]  # (namespace or "", name)

APPLICATION_ID = 0x5346434B  # "SFCK": this file is an sfc-k8s API server database
SCHEMA_VERSION = 1
SYNCHRONOUS_MODES = ("normal", "full")

_SCHEMA = """
CREATE TABLE objects (
    grp TEXT NOT NULL, plural TEXT NOT NULL, ns TEXT NOT NULL, name TEXT NOT NULL,
    created INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (grp, plural, ns, name)
) WITHOUT ROWID;
CREATE TABLE events (
    rv INTEGER PRIMARY KEY, grp TEXT NOT NULL, plural TEXT NOT NULL,
    type TEXT NOT NULL, body TEXT NOT NULL, old TEXT
);
CREATE TABLE compacted (
    grp TEXT NOT NULL, plural TEXT NOT NULL, rv INTEGER NOT NULL, PRIMARY KEY (grp, plural)
) WITHOUT ROWID;
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class DatabaseError(Exception):
    """The database cannot be opened, read or written; the message is one line for a person."""


_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)


@dataclass
class StoredEvent:
    """One kept change event as the database holds it."""

    rv: int
    resource: ResourceKey
    type: str
    obj: Obj
    old: Obj | None


@dataclass
class Batch:
    """The changes of one API write, committed together by `Database.write`.

    `objects` maps each touched object to its new body (None: removed); `created` is the
    resourceVersion that created each object written here for the first time (its place in
    the creation order); `events` are appended to the history, `dropped` are the
    resourceVersions of events that fell out of it, `dropped_resources` resources whose whole
    history went (their CRD was deleted).
    """

    objects: dict[tuple[ResourceKey, ObjKey], Obj | None] = field(default_factory=dict)
    created: dict[tuple[ResourceKey, ObjKey], int] = field(default_factory=dict)
    events: list[StoredEvent] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    dropped_resources: set[ResourceKey] = field(default_factory=set)
    compacted: dict[ResourceKey, int] = field(default_factory=dict)
    rv: int | None = None

    def __bool__(self) -> bool:
        return self.rv is not None or bool(
            self.objects or self.events or self.dropped or self.dropped_resources or self.compacted
        )

    def drop_resource(self, resource: ResourceKey) -> None:
        """Forget the whole history of `resource`, events of this batch included."""
        self.dropped_resources.add(resource)
        self.events = [e for e in self.events if e.resource != resource]


@dataclass
class Snapshot:
    """Everything a database holds, as `Store` restores it."""

    rv: int
    objects: list[tuple[ResourceKey, Obj]]  # oldest first
    events: list[StoredEvent]  # by resourceVersion
    compacted: dict[ResourceKey, int]

    @property
    def empty(self) -> bool:
        return self.rv == 0 and not self.objects


class Database:
    """One SQLite file holding a store's objects, history and counter."""

    def __init__(self, path: Path, *, synchronous: str = "normal") -> None:
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"synchronous: {synchronous!r} is not one of {', '.join(SYNCHRONOUS_MODES)}"
            )
        self.path = Path(path)
        self.synchronous = synchronous
        self._conn = self._open()

    def _fail(self, what: str, err: BaseException) -> DatabaseError:
        return DatabaseError(
            f"the API server database {self.path} {what} ({err}): move the file aside to start "
            "an empty cluster, or remove the whole cluster with `sfc-k8s local down`"
        )

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=1.0, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as err:
            raise self._fail("cannot be opened", err) from err
        try:
            self._check(conn)
            # One API server per file: the first read takes a lock held until close (and
            # spares each transaction its lock calls).
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
        except sqlite3.Error as err:
            conn.close()
            if getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY:
                raise DatabaseError(
                    f"the API server database {self.path} is in use by another process ({err}): "
                    "stop the API server that has it open first"
                ) from err
            raise self._fail("is unreadable", err) from err
        except DatabaseError:
            conn.close()
            raise
        return conn

    def _check(self, conn: sqlite3.Connection) -> None:
        """Refuse a file that is not ours or is damaged; create the tables in a new one."""
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app_id == 0 and version == 0 and tables == 0:
            conn.executescript(
                f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA application_id={APPLICATION_ID};"
                f" PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
            )
            return
        if app_id != APPLICATION_ID:
            raise DatabaseError(
                f"{self.path} is an SQLite file but not an sfc-k8s API server database "
                f"(application_id {app_id:#x}): give the API server another file"
            )
        if version != SCHEMA_VERSION:
            raise DatabaseError(
                f"the API server database {self.path} has schema version {version}, this "
                f"version reads {SCHEMA_VERSION}: use the sfc-k8s that wrote it, or move the "
                "file aside to start an empty cluster"
            )
        problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise self._fail("is damaged", sqlite3.DatabaseError("; ".join(problems[:3])))

    def close(self) -> None:
        self._conn.close()

    # ----- reading ------------------------------------------------------------------------

    def load(self) -> Snapshot:
        """What the database holds (objects oldest first, events by resourceVersion)."""
        try:
            return self._load()
        except sqlite3.Error as err:
            raise self._fail("is unreadable", err) from err
        except (ValueError, TypeError) as err:  # a body that is not a JSON object
            raise self._fail("holds an unreadable object", err) from err

    def _load(self) -> Snapshot:
        conn = self._conn
        rv = conn.execute(
            "SELECT max(coalesce((SELECT value FROM counters WHERE name = 'rv'), 0),"
            " coalesce((SELECT max(rv) FROM events), 0))"
        ).fetchone()[0]
        objects = []
        current: dict[int, Obj] = {}  # resourceVersion -> object, shared with its event
        for grp, plural, body in conn.execute(
            "SELECT grp, plural, body FROM objects ORDER BY created"
        ):
            obj = _object(body)
            objects.append(((grp, plural), obj))
            current[int(obj["metadata"]["resourceVersion"])] = obj
        events = []
        for ev_rv, grp, plural, kind, body, old in conn.execute(
            "SELECT rv, grp, plural, type, body, old FROM events ORDER BY rv"
        ):
            shared = current.get(ev_rv) if kind != "DELETED" else None
            obj = shared if shared is not None else _object(body)
            events.append(
                StoredEvent(ev_rv, (grp, plural), kind, obj, _object(old) if old else None)
            )
        compacted = {
            (grp, plural): int(value)
            for grp, plural, value in conn.execute("SELECT grp, plural, rv FROM compacted")
        }
        return Snapshot(rv, objects, events, compacted)

    # ----- writing ------------------------------------------------------------------------

    def write(self, batch: Batch) -> None:
        """Commit `batch` in one transaction: all of it, or (DatabaseError) none of it."""
        if not batch:
            return
        try:
            with self._transaction() as conn:
                self._apply(conn, batch)
        except sqlite3.Error as err:
            raise self._fail("could not be written", err) from err
        except (ValueError, TypeError) as err:  # an object JSON cannot hold
            raise self._fail("could not be written", err) from err

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @staticmethod
    def _apply(conn: sqlite3.Connection, batch: Batch) -> None:
        texts: dict[int, str] = {}  # id(object) -> its JSON: an object and its event share it

        def dump(obj: Obj) -> str:
            text = texts.get(id(obj))
            if text is None:
                text = texts[id(obj)] = _ENCODER.encode(obj)
            return text

        for (resource, (ns, name)), obj in batch.objects.items():
            if obj is None:
                conn.execute(
                    "DELETE FROM objects WHERE grp = ? AND plural = ? AND ns = ? AND name = ?",
                    (*resource, ns, name),
                )
                continue
            created = batch.created.get((resource, (ns, name)), 0)
            conn.execute(
                "INSERT INTO objects (grp, plural, ns, name, created, body)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (grp, plural, ns, name) DO UPDATE SET body = excluded.body,"
                " created = CASE WHEN excluded.created > 0 THEN excluded.created ELSE created END",
                (*resource, ns, name, created, dump(obj)),
            )
        for resource in batch.dropped_resources:
            conn.execute("DELETE FROM events WHERE grp = ? AND plural = ?", resource)
        for e in batch.events:
            conn.execute(
                "INSERT INTO events (rv, grp, plural, type, body, old) VALUES (?, ?, ?, ?, ?, ?)",
                (e.rv, *e.resource, e.type, dump(e.obj), dump(e.old) if e.old else None),
            )
        for rv in batch.dropped:
            conn.execute("DELETE FROM events WHERE rv = ?", (rv,))
        for resource, rv in batch.compacted.items():
            conn.execute(
                "INSERT INTO compacted (grp, plural, rv) VALUES (?, ?, ?)"
                " ON CONFLICT (grp, plural) DO UPDATE SET rv = excluded.rv",
                (*resource, rv),
            )
        # The counter is the newest kept event's resourceVersion, unless that event is gone
        # already (the last events of a deleted CRD's objects): then it is written down.
        newest = batch.events[-1].rv if batch.events else None
        if batch.rv is not None and batch.rv != newest:
            conn.execute(
                "INSERT INTO counters (name, value) VALUES ('rv', ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (batch.rv,),
            )


def _object(text: str) -> Obj:
    value = json.loads(text)
    if not isinstance(value, dict) or not isinstance(value.get("metadata"), dict):
        raise ValueError(f"not a Kubernetes object: {text[:60]!r}")
    return value


__all__ = ["Batch", "Database", "DatabaseError", "Snapshot", "StoredEvent"]
