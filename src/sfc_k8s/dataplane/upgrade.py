"""Program upgrade in place: a process whose eBPF object is another build than the one pinned
replaces the pinned programs on every attached interface, without a packet lost.

Called by ``Dataplane`` (the agent and every ``sfc-k8s dp`` call) through ``load_or_upgrade``,
with the root's lock held. The build identity is the SHA-256 of the object file, recorded in a
small map pinned beside the node-wide maps (``structs.BUILD_MAP``); pins without one (made
before identities were recorded) count as another build.

The steps, each undone if a later one fails, so a refused or failed upgrade leaves the old
programs running on every interface and the pins as they were:

1. plan (``plan_maps``, pure): compare each node-wide map of the new object with the pinned one.
   Same layout: the new object reuses the pinned map (sessions, counters, endpoints kept).
   Changed: a cache the program refills (``structs.REBUILT_MAPS``) starts empty; a map only
   user space writes (``structs.COPIED_MAPS``) whose capacity alone grew is copied; anything
   else is refused with a message naming the map and the difference.
2. load the new object (the verifier runs; nothing is attached yet), copy the copied maps,
   pin the new programs and maps at temporary paths.
3. swap: each TCX link is pointed at the new program with ``bpf_link_update`` (atomic, and
   only if the link still runs the old program); each clsact fallback filter is replaced
   (``tc filter replace``, atomic too, all in one ``tc -batch``). A failure swaps the ones
   already done back.
4. commit: rename the temporary pins over the old ones and record the new identity.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import re
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from sfc_k8s.dataplane import _libbpf as bpf
from sfc_k8s.dataplane import loader, maps, structs
from sfc_k8s.dataplane.errors import BpfError, DataplaneError

# Folder (under the root) of the new build's pins while a replacement is in progress; renamed
# over the old pins at commit. Same base names, so a clsact filter (which tc labels with the
# pin's name) reads the same before and after.
STAGING = "staging"


class UpgradeRefusedError(DataplaneError):
    """The new build's maps cannot take over the pinned ones; the old programs keep running."""


class MapAction(Enum):
    REUSE = "reused"  # the pinned map, as it is
    FRESH = "rebuilt"  # a new, empty map (a cache, or a map the old build did not have)
    COPY = "copied"  # a new, larger map holding the pinned one's entries


@dataclass(frozen=True)
class MapSpec:
    """What must match for a pinned map to serve a new object's map."""

    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int

    @classmethod
    def of_pinned(cls, fd: int) -> MapSpec:
        i = bpf.map_info(fd)
        return cls(i.type, i.key_size, i.value_size, i.max_entries, i.map_flags)

    @classmethod
    def of_object(cls, handle: int) -> MapSpec:
        return cls(*bpf.map_spec(handle))

    def changes(self, new: MapSpec) -> list[str]:
        """What differs from ``self`` (pinned) to ``new``, in words."""
        what = {
            "type": "map type",
            "key_size": "key size",
            "value_size": "value size",
            "max_entries": "capacity",
            "flags": "flags",
        }
        return [
            f"{label} {getattr(self, name)} -> {getattr(new, name)}"
            for name, label in what.items()
            if getattr(self, name) != getattr(new, name)
        ]


@dataclass(frozen=True)
class Plan:
    actions: dict[str, MapAction]
    refusals: list[str]
    stale: list[str]  # pinned maps the new build no longer has (unpinned at commit)


_WHY_NOT = {
    structs.MAP_SESSIONS: "live sessions cannot be converted (their flows would be re-balanced)",
    structs.MAP_SESSIONS4: "live sessions cannot be converted (their flows would be re-balanced)",
    structs.MAP_EP_COUNTERS: "the program counts into it while the upgrade runs",
    structs.MAP_LINK_STATS: "the program counts into it while the upgrade runs",
    structs.MAP_MAGLEV: "its per-link tables would have to be re-inserted",
}


def _base(name: str) -> str:
    """A map's name without its layout version (``sfc_endpts_v2`` -> ``sfc_endpts``)."""
    return re.sub(r"_v\d+$", "", name)


def _changed(name: str, old: MapSpec, new: MapSpec) -> tuple[MapAction | None, str]:
    """The action for a pinned map whose layout differs, or None and why it is refused."""
    if name in structs.REBUILT_MAPS:
        return MapAction.FRESH, ""
    grown_only = old.changes(new) == [f"capacity {old.max_entries} -> {new.max_entries}"]
    if name in structs.COPIED_MAPS and grown_only and new.max_entries > old.max_entries:
        return MapAction.COPY, ""
    why = _WHY_NOT.get(name, "only a larger capacity can be migrated for it")
    kind = structs.MAP_VALUE_TYPES.get(name, "value")
    return None, f"{name} ({kind}): {', '.join(old.changes(new))}: {why}"


def plan_maps(pinned: Mapping[str, MapSpec], wanted: Mapping[str, MapSpec]) -> Plan:
    """How each of the new object's node-wide maps (``wanted``) takes over from the maps
    pinned by the old build (``pinned``, every map pin of the root), or why it cannot."""
    actions: dict[str, MapAction] = {}
    refusals = []
    for name, new in wanted.items():
        old = pinned.get(name)
        if old is None:
            renamed = [p for p in pinned if p not in wanted and _base(p) == _base(name)]
            if renamed and name not in structs.REBUILT_MAPS:
                refusals.append(
                    f"{name}: the pinned state has {renamed[0]} instead, and no conversion"
                    " between the two layouts is known"
                )
            actions[name] = MapAction.FRESH
            continue
        if old == new:
            action: MapAction | None = MapAction.REUSE
        else:
            action, refusal = _changed(name, old, new)
            if action is None:
                refusals.append(refusal)
                continue
        expected = structs.MAP_LAYOUTS.get(name)
        if expected is not None and expected != (new.key_size, new.value_size):
            refusals.append(
                f"{name}: the object's key/value sizes {new.key_size}/{new.value_size} are not"
                f" this agent's {expected[0]}/{expected[1]} (object and agent of different"
                " versions: rebuild with 'make bpf')"
            )
        elif action is not None:
            actions[name] = action
    stale = sorted(p for p in pinned if p not in wanted)
    return Plan(actions, refusals, stale)


# --- build identity -------------------------------------------------------------------------


def build_identity(path: Path) -> bytes:
    """The SHA-256 of the object file: equal identities, equal programs and layouts."""
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except FileNotFoundError:
        raise DataplaneError(f"eBPF object {str(path)!r} is missing: run 'make bpf'") from None


def build_pin(pins: loader.Pins) -> str:
    return pins.node_map(structs.BUILD_MAP)


def recorded_identity(pins: loader.Pins) -> bytes:
    """The identity recorded with the pins, b"" when none was."""
    try:
        fd = bpf.obj_get(build_pin(pins))
    except BpfError:
        return b""
    try:
        value = (ctypes.c_uint8 * structs.BUILD_ID_SIZE)()
        if not bpf.map_lookup(fd, ctypes.c_uint32(0), value):
            return b""
        return bytes(value)
    finally:
        os.close(fd)


def _identity_map(identity: bytes) -> int:
    fd = bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, structs.BUILD_MAP, 4, structs.BUILD_ID_SIZE, 1)
    value = (ctypes.c_uint8 * structs.BUILD_ID_SIZE)(*identity)
    bpf.map_update(fd, ctypes.c_uint32(0), value)
    return fd


def record_identity(pins: loader.Pins, identity: bytes) -> None:
    """Pin a new identity map over the old one (a rename: never a moment without one)."""
    fd = _identity_map(identity)
    try:
        _pin_over(fd, build_pin(pins))
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):  # empty unless a replacement is in progress
            os.rmdir(os.path.join(pins.root, STAGING))


def _pin_over(fd: int, path: str) -> None:
    temporary = _staging_path(path)
    _unlink_quietly(temporary)
    bpf.obj_pin(fd, temporary)
    os.rename(temporary, path)


def _staging_path(final: str) -> str:
    """Where the new build's object pinned at ``final`` waits for the commit."""
    folder = os.path.join(os.path.dirname(final), STAGING)
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, os.path.basename(final))


# --- attachments ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Attachment:
    """One interface running a pinned program: through a pinned TCX link, or a clsact filter."""

    ifindex: int
    program: str  # structs.PROG_INGRESS or structs.PROG_TUNNEL
    link_pin: str = ""  # "" for a clsact filter


def _tcx_pins(folder: str) -> Iterator[tuple[int, str]]:
    with contextlib.suppress(FileNotFoundError):
        for entry in os.listdir(folder):
            if entry.startswith("tcx_"):
                yield int(entry[4:]), os.path.join(folder, entry)


def attachments(pins: loader.Pins, endpoints_fd: int, tunnel_fd: int) -> list[Attachment]:
    """Every interface the pinned programs run on: the TCX links pinned under the links, the
    interfaces and the tunnel folders, then the local endpoints and the tunnel device that
    have none, which the manager attached with the clsact fallback (it attaches every local
    endpoint that runs nothing of ours)."""
    found = []
    for link in os.listdir(pins.links_dir) if os.path.isdir(pins.links_dir) else []:
        found += [Attachment(i, structs.PROG_INGRESS, p) for i, p in _tcx_pins(pins.link_dir(link))]
    # Interfaces attached when their pod appeared, in a link or not (yet).
    found += [Attachment(i, structs.PROG_INGRESS, p) for i, p in _tcx_pins(pins.ifaces_dir)]
    found += [Attachment(i, structs.PROG_TUNNEL, p) for i, p in _tcx_pins(pins.tunnel_dir)]
    found.sort(key=lambda a: a.ifindex)  # one order every time
    linked = {a.ifindex for a in found}
    local = set()
    size = ctypes.sizeof(structs.EndpointEntry)
    for _, values in maps.walk_raw(endpoints_fd, 4, size):
        for i in range(len(values) // size):
            entry = structs.EndpointEntry.from_buffer_copy(values, i * size)
            if entry.gen and entry.ifindex and not entry.remote:
                local.add(int(entry.ifindex))
    found += [Attachment(i, structs.PROG_INGRESS) for i in sorted(local - linked)]
    config = maps.lookup(tunnel_fd, ctypes.c_uint32(0), structs.TunnelConfig)
    tunnel_ifindex = int(config.ifindex) if config is not None else 0
    if tunnel_ifindex and tunnel_ifindex not in linked:
        found.append(Attachment(tunnel_ifindex, structs.PROG_TUNNEL))
    return found


@dataclass
class _Programs:
    """Old and new fds of each program, and where each is pinned (tc attaches by path)."""

    old: dict[str, int] = field(default_factory=dict)
    new: dict[str, int] = field(default_factory=dict)
    old_pin: dict[str, str] = field(default_factory=dict)
    new_pin: dict[str, str] = field(default_factory=dict)


def _point(link_pin: str, to: int, was: int) -> bool:
    """Make a TCX link run program ``to`` (was ``was``); False if its interface is gone."""
    fd = bpf.obj_get(link_pin)
    try:
        bpf.link_update(fd, to, old_prog_fd=was)
    except BpfError as err:
        if err.errno in (errno.ENOLINK, errno.ENODEV):
            return False  # defunct: the interface was deleted, nothing runs there
        raise
    finally:
        os.close(fd)
    return True


# What ``tc`` says when nothing of ours runs on an interface: it is gone, or it has no clsact
# qdisc (so no filter either). Such an interface is skipped, as a defunct TCX link is.
_TC_NOTHING_THERE = ("Cannot find device", "Parent Qdisc doesn't exist")


def _tc_replace_all(targets: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], str]:
    """Point the clsact filter of each (interface, program pin) at that program, in as few
    ``tc`` processes as can be, skipping interfaces with nothing of ours on them. Returns the
    ones done, and the error that stopped it ("" when none did)."""
    done: list[tuple[str, str]] = []
    pending = targets
    while pending:
        count, error = loader.tc_batch([loader.tc_replace_command(*t) for t in pending])
        done += pending[:count]
        if not error:
            break
        if not any(sign in error for sign in _TC_NOTHING_THERE):
            return done, f"failed to replace the tc filter of {pending[count][0]!r}: {error}"
        pending = pending[count + 1 :]
    return done, ""


def _swap_tc(found: list[Attachment], progs: _Programs, undo: contextlib.ExitStack) -> int:
    """Replace every clsact filter (the kernel swaps each atomically); undone with ``undo``."""
    targets, back = [], {}
    for a in found:
        with contextlib.suppress(OSError):  # gone: nothing runs there
            name = socket.if_indextoname(a.ifindex)
            targets.append((name, progs.new_pin[a.program]))
            back[name] = progs.old_pin[a.program]
    done, error = _tc_replace_all(targets)
    undo.callback(_tc_replace_all, [(name, back[name]) for name, _ in done])
    if error:
        raise BpfError(error)
    return len(done)


def _swap(found: list[Attachment], progs: _Programs, undo: contextlib.ExitStack) -> int:
    """Point every attachment at the new programs; each swap is undone (``undo``) if a later
    one fails. Returns how many interfaces now run the new programs."""
    swapped = 0
    for a in (a for a in found if a.link_pin):
        new, old = progs.new[a.program], progs.old[a.program]
        if _point(a.link_pin, new, old):
            undo.callback(_point, a.link_pin, old, new)
            swapped += 1
    return swapped + _swap_tc([a for a in found if not a.link_pin], progs, undo)


# --- the upgrade ----------------------------------------------------------------------------


@dataclass
class Outcome:
    """What opening the root did: "loaded" (nothing was pinned), "adopted" (same build) or
    "upgraded", with the upgrade's figures."""

    action: str
    interfaces: int = 0
    maps: dict[str, MapAction] = field(default_factory=dict)
    load_seconds: float = 0.0  # open, verify and load the new object
    swap_seconds: float = 0.0  # every attachment pointed at the new programs
    total_seconds: float = 0.0

    def summary(self) -> str:
        if self.action == "loaded":
            return "loaded the programs (nothing was pinned)"
        if self.action == "adopted":
            return "adopted the pinned programs"
        changed = [f"{n} {a.value}" for n, a in sorted(self.maps.items()) if a != MapAction.REUSE]
        return (
            f"upgraded the programs on {self.interfaces} interface(s) in"
            f" {self.total_seconds * 1000:.0f} ms (swap {self.swap_seconds * 1000:.1f} ms);"
            f" maps: {', '.join(changed) or 'all reused'}"
        )


def _pinned_maps(pins: loader.Pins) -> dict[str, int]:
    """Fds of every map pinned at the root (the node-wide maps of the old build)."""
    skip = {structs.PROG_INGRESS, structs.PROG_TUNNEL, structs.BUILD_MAP}
    fds: dict[str, int] = {}
    try:
        for entry in sorted(os.listdir(pins.root)):
            path = pins.node_map(entry)
            if entry not in skip and os.path.isfile(path):
                fds[entry] = bpf.obj_get(path)
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds


def _copy(source: int, target: int, spec: MapSpec) -> None:
    """Every entry of ``source`` into ``target`` (same key and value sizes)."""
    for keys, values in maps.walk_raw(source, spec.key_size, spec.value_size):
        count = len(keys) // spec.key_size
        key_buf = ctypes.create_string_buffer(bytes(keys), len(keys))
        value_buf = ctypes.create_string_buffer(bytes(values), len(values))
        bpf.map_update_batch(target, key_buf, value_buf, count)


def _prepare(obj: int, pins: loader.Pins, old_maps: dict[str, int], sessions: int) -> Plan:
    """Steps before the load: the plan (UpgradeRefusedError if anything is refused) and the
    object's maps pointed at the pinned ones they reuse."""
    for name in structs.SESSION_MAPS:  # a pinned table keeps its size, a new one gets ours
        size = bpf.map_info(old_maps[name]).max_entries if name in old_maps else sessions
        bpf.map_set_max_entries(bpf.object_map(obj, name), size)
    wanted = {n: MapSpec.of_object(bpf.object_map(obj, n)) for n in structs.NODE_MAPS}
    pinned = {n: MapSpec.of_pinned(fd) for n, fd in old_maps.items()}
    plan = plan_maps(pinned, wanted)
    if plan.refusals:
        raise UpgradeRefusedError(
            f"cannot replace the data-plane programs pinned under {pins.root!r}:"
            f" {'; '.join(plan.refusals)}. The pinned programs keep running: run a build"
            " whose layout the pinned state can take, or drain the node and 'sfc-k8s dp reset'"
        )
    for name, action in plan.actions.items():
        if action == MapAction.REUSE:
            bpf.map_set_pin_path(bpf.object_map(obj, name), pins.node_map(name))
    return plan


def _stage(
    obj: int, pins: loader.Pins, plan: Plan, old_maps: dict[str, int], undo: contextlib.ExitStack
) -> dict[str, str]:
    """After the load: fill the copied maps and pin what is new at temporary paths; returns
    temporary path -> final path of each."""
    staged = {}
    for name, action in plan.actions.items():
        if action == MapAction.REUSE:
            continue
        fd = bpf.map_fd(bpf.object_map(obj, name))
        if action == MapAction.COPY:
            _copy(old_maps[name], fd, MapSpec.of_pinned(old_maps[name]))
        staged[_staged_pin(fd, pins.node_map(name), undo)] = pins.node_map(name)
    for name, final in (
        (structs.PROG_TUNNEL, pins.tunnel_program),
        (structs.PROG_INGRESS, pins.program),
    ):
        fd = bpf.program_fd(bpf.object_program(obj, name))
        staged[_staged_pin(fd, final, undo)] = final
    return staged


def _staged_pin(fd: int, final: str, undo: contextlib.ExitStack) -> str:
    temporary = _staging_path(final)
    _unlink_quietly(temporary)  # of an upgrade that died half-way
    bpf.obj_pin(fd, temporary)
    undo.callback(_unlink_quietly, temporary)
    return temporary


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _open_old_programs(pins: loader.Pins, fds: dict[str, int]) -> None:
    """Fds of the pinned programs into ``fds`` (an old build may lack the tunnel's)."""
    fds[structs.PROG_INGRESS] = bpf.obj_get(pins.program)
    if os.path.exists(pins.tunnel_program):
        fds[structs.PROG_TUNNEL] = bpf.obj_get(pins.tunnel_program)


def replace(
    pins: loader.Pins, object_path: Path, identity: bytes, *, session_table_size: int
) -> Outcome:
    """Replace the pinned programs with the object's on every attachment (see the module's
    docstring). The caller holds the root's lock. ``session_table_size`` sizes a session
    table the pinned state lacks."""
    start = time.perf_counter()
    old_maps: dict[str, int] = {}
    progs = _Programs()
    progs.old_pin = {structs.PROG_INGRESS: pins.program, structs.PROG_TUNNEL: pins.tunnel_program}
    obj = 0
    try:
        old_maps.update(_pinned_maps(pins))
        _open_old_programs(pins, progs.old)
        obj = loader.open_object(object_path)
        plan = _prepare(obj, pins, old_maps, session_table_size)
        bpf.object_load(obj)  # reused maps are shared from here; nothing runs the new code yet
        loaded = time.perf_counter()
        with contextlib.ExitStack() as undo:
            staged = _stage(obj, pins, plan, old_maps, undo)
            for name in (structs.PROG_INGRESS, structs.PROG_TUNNEL):
                progs.new[name] = bpf.program_fd(bpf.object_program(obj, name))
                progs.new_pin[name] = _staging_path(pins.node_map(name))
            found = attachments(pins, old_maps[structs.MAP_ENDPOINTS], old_maps[structs.MAP_TUNNEL])
            swap_start = time.perf_counter()
            swapped = _swap(found, progs, undo)
            swapped_at = time.perf_counter()
            undo.pop_all()  # from here on every interface runs the new programs: commit
        for temporary, final in staged.items():
            os.rename(temporary, final)
        for name in plan.stale:
            _unlink_quietly(pins.node_map(name))
        record_identity(pins, identity)
    finally:
        if obj:
            loader.close_object(obj)
        for fd in [*old_maps.values(), *progs.old.values()]:
            os.close(fd)
        with contextlib.suppress(OSError):  # empty by now, after a commit or an undo
            os.rmdir(os.path.join(pins.root, STAGING))
    return Outcome(
        "upgraded",
        interfaces=swapped,
        maps=plan.actions,
        load_seconds=loaded - start,
        swap_seconds=swapped_at - swap_start,
        total_seconds=time.perf_counter() - start,
    )


def load_or_upgrade(
    pins: loader.Pins,
    *,
    session_table_size: int,
    object_path: Path = loader.OBJECT_PATH,
    upgrade: bool = True,
) -> tuple[loader.NodeFds, Outcome]:
    """Open the root: load the object if nothing is pinned, adopt the pinned state of the
    same build, else (with ``upgrade``) replace the pinned programs first."""
    identity = build_identity(object_path)
    if not os.path.exists(pins.program):
        loader.load(pins, session_table_size=session_table_size, object_path=object_path)
        record_identity(pins, identity)
        return loader.adopt(pins), Outcome("loaded")
    if not upgrade or recorded_identity(pins) == identity:
        return loader.adopt(pins), Outcome("adopted")
    outcome = replace(pins, object_path, identity, session_table_size=session_table_size)
    return loader.adopt(pins), outcome
