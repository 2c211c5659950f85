"""The node's data plane manager: links, endpoints, counters and sessions in the pinned maps.

``Dataplane`` is what the ``dp`` CLI and the node agent call. It keeps no state of its own:
every method reads and writes the maps pinned under its root, under an exclusive lock on the
root folder so that several processes (CLI calls, an agent) can share one node.

Session lifecycle: the program records a session per new flow. When an endpoint is removed,
its sessions are purged here by walking the session tables; the program also checks each
recorded endpoint's generation stamp on every hit, so a session naming an endpoint that left
(or left and came back, or whose ifindex was reused) is never followed, even before the purge.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import re
import secrets
import socket
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from types import TracebackType

from sfc_k8s.api.models import EndpointState, Side
from sfc_k8s.dataplane import _libbpf as bpf
from sfc_k8s.dataplane import loader, maglev, maps, structs
from sfc_k8s.dataplane.errors import (
    CapacityError,
    DataplaneError,
    EndpointExists,
    EndpointNotFound,
    InterfaceNotFound,
    InvalidName,
    LinkExists,
    LinkNotFound,
)
from sfc_k8s.dataplane.records import (
    DropReason,
    Endpoint,
    EndpointCounters,
    LinkStatus,
    Session,
)
from sfc_k8s.dataplane.structs import EndpointEntry, FlowKey, FlowKey4, FlowKind, SessionValue

DEFAULT_BPFFS_ROOT = "/sys/fs/bpf/sfc-k8s"

# A link name becomes a bpffs folder name: DNS-label-like, no path separators.
_LINK_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?$")

_KIND_NAMES = {
    FlowKind.L4_V4: "l4-v4",
    FlowKind.L4_V6: "l4-v6",
    FlowKind.L3_V4: "l3-v4",
    FlowKind.L3_V6: "l3-v6",
    FlowKind.ARP: "arp",
    FlowKind.ND: "nd",
    FlowKind.L2: "l2",
}


def _state(raw: int) -> EndpointState:
    return EndpointState.DRAINING if raw == structs.EP_DRAINING else EndpointState.ACTIVE


def _ifindex(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError as err:
        raise InterfaceNotFound(f"no interface named {ifname!r}: {err}") from err


class Dataplane:
    """The node's data plane under one bpffs root.

    Mounts bpffs if needed, then adopts the pinned program and maps under ``root`` or, when
    there are none, loads the eBPF object and pins them. ``session_table_size`` applies only
    to that first load (a pinned session table keeps its size). ``attach_mode`` is "auto"
    (TCX, clsact if the kernel has no TCX), "tcx" or "tc".
    """

    def __init__(
        self,
        root: str = DEFAULT_BPFFS_ROOT,
        *,
        session_table_size: int = structs.SESSIONS_DEFAULT,
        attach_mode: str = "auto",
    ) -> None:
        if session_table_size < 1:
            raise DataplaneError(f"session table size must be positive, not {session_table_size}")
        self.root = root
        self.pins = loader.Pins(root)
        self._attach_mode = attach_mode
        self._lock_fd = -1
        self._thread_lock = threading.Lock()
        loader.ensure_bpffs()
        try:
            os.makedirs(self.pins.links_dir, exist_ok=True)
        except OSError as err:
            raise DataplaneError(f"failed to create {self.pins.links_dir!r}: {err}") from err
        self._lock_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with self._locked():
                self._fds = loader.load_or_adopt(self.pins, session_table_size=session_table_size)
        except BaseException:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise

    # --- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the fds; the pinned state (and traffic) stays."""
        if self._lock_fd >= 0:
            self._fds.close()
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Dataplane:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive use of the root: against other processes (flock on the root folder) and
        other threads of this one (flock does not separate those)."""
        with self._thread_lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _map(self, name: str) -> int:
        return self._fds.maps[name]

    @property
    def program_fd(self) -> int:
        """The loaded program (for BPF_PROG_TEST_RUN)."""
        return self._fds.program

    def map_fd(self, name: str) -> int:
        """A node-wide map by its name in ``structs`` (for tests and debugging)."""
        return self._map(name)

    # --- reading ------------------------------------------------------------------------------

    def links(self) -> list[str]:
        try:
            names = os.listdir(self.pins.links_dir)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if os.path.exists(self.pins.link_info(n)))

    def _link_id(self, name: str) -> int:
        if not _LINK_NAME.match(name) or not os.path.exists(self.pins.link_info(name)):
            raise LinkNotFound(f"no link named {name!r} under {self.root!r}")
        fd = bpf.obj_get(self.pins.link_info(name))
        try:
            info = maps.lookup(fd, ctypes.c_uint32(0), structs.LinkInfoValue)
        finally:
            os.close(fd)
        if info is None or info.link_id == 0:
            raise LinkNotFound(f"link {name!r} has no id (half-created): delete it and retry")
        return int(info.link_id)

    def _link_ids(self) -> dict[int, str]:
        return {self._link_id(name): name for name in self.links()}

    def _slots(self) -> dict[int, EndpointEntry]:
        """Every endpoint of the node by slot (found through the interface index map, so the
        cost follows the number of endpoints, not the size of the array)."""
        index = self._map(structs.MAP_IFSLOTS)
        array = self._map(structs.MAP_ENDPOINTS)
        result = {}
        for ifindex, slot in maps.walk(index, ctypes.c_uint32, ctypes.c_uint32):
            entry = maps.lookup(array, slot, EndpointEntry)
            if entry is not None and entry.ifindex == ifindex.value:
                result[slot.value] = entry
        return result

    def _endpoints(self, link_id: int, side: Side | None = None) -> dict[int, EndpointEntry]:
        return {
            slot: e
            for slot, e in self._slots().items()
            if e.link_id == link_id and (side is None or e.side == side.num)
        }

    def _slot_of(self, ifindex: int) -> int | None:
        slot = maps.lookup(
            self._map(structs.MAP_IFSLOTS), ctypes.c_uint32(ifindex), ctypes.c_uint32
        )
        return None if slot is None else int(slot.value)

    def _counters(self, slot: int) -> EndpointCounters:
        per_cpu = maps.percpu(
            self._map(structs.MAP_EP_COUNTERS), ctypes.c_uint32(slot), structs.EpCounters
        )
        if per_cpu is None:
            return EndpointCounters()
        return EndpointCounters(
            rx_packets=sum(c.rx_packets for c in per_cpu),
            rx_bytes=sum(c.rx_bytes for c in per_cpu),
            tx_packets=sum(c.tx_packets for c in per_cpu),
            tx_bytes=sum(c.tx_bytes for c in per_cpu),
        )

    def _sessions_raw(self, link_id: int) -> Iterator[tuple[FlowKey, SessionValue]]:
        for key4, value in maps.walk(self._map(structs.MAP_SESSIONS4), FlowKey4, SessionValue):
            if key4.link_id == link_id:
                yield key4.flow_key(), value
        for key, value in maps.walk(self._map(structs.MAP_SESSIONS), FlowKey, SessionValue):
            if key.link_id == link_id:
                yield key, value

    def status(self, link: str) -> LinkStatus:
        return self._status(link, self._link_id(link), None)

    def statuses(self) -> list[LinkStatus]:
        """The status of every link, reading the session table once for all of them."""
        counts = self._session_counts()
        return [self._status(name, self._link_id(name), counts) for name in self.links()]

    def endpoints(self, link: str) -> list[Endpoint]:
        """The link's endpoints (sorted by side and name) with their counters, without
        reading the session table: ``status`` counts the link's sessions by walking the whole
        node-wide table, which a reconcile loop that only needs the endpoints should not pay."""
        return self._endpoint_list(self._link_id(link))

    def _endpoint_list(self, link_id: int) -> list[Endpoint]:
        endpoints = [
            Endpoint(
                side=Side.from_index(e.side),
                ifname=e.ifname.decode(),
                ifindex=e.ifindex,
                state=_state(e.state),
                counters=self._counters(slot),
            )
            for slot, e in self._endpoints(link_id).items()
        ]
        endpoints.sort(key=lambda e: (e.side.value, e.ifname))
        return endpoints

    def _status(self, link: str, link_id: int, counts: Counter[int] | None) -> LinkStatus:
        endpoints = self._endpoint_list(link_id)
        per_cpu = maps.percpu(
            self._map(structs.MAP_LINK_STATS), ctypes.c_uint32(link_id), structs.LinkStats
        )
        drops = {r: sum(s.drops[r] for s in per_cpu or []) for r in DropReason}
        if counts is None:
            counts = self._session_counts(only=link_id)
        return LinkStatus(
            name=link,
            link_id=link_id,
            endpoints=endpoints,
            sessions=counts[link_id],
            drops=drops,
            sessions_created=sum(s.sessions_created for s in per_cpu or []),
        )

    def sessions(self, link: str) -> list[Session]:
        """The link's sessions, with the endpoint on each side ("" if it left the link)."""
        link_id = self._link_id(link)
        slots = self._endpoints(link_id)
        result = []
        for key, value in self._sessions_raw(link_id):
            names, ifindexes = [], []
            for side in (0, 1):
                e = slots.get(value.slot[side])
                ok = e is not None and e.side == side and e.gen == value.gen[side]
                names.append(e.ifname.decode() if ok and e is not None else "")
                ifindexes.append(e.ifindex if ok and e is not None else 0)
            addr_lo, port_lo, addr_hi, port_hi = key.endpoints()
            result.append(
                Session(
                    kind=_KIND_NAMES[FlowKind(key.kind)],
                    proto=key.proto,
                    vlan=key.vlan,
                    addr_lo=addr_lo,
                    port_lo=port_lo,
                    addr_hi=addr_hi,
                    port_hi=port_hi,
                    a_ifname=names[0],
                    a_ifindex=ifindexes[0],
                    b_ifname=names[1],
                    b_ifindex=ifindexes[1],
                )
            )
        return result

    # --- changing -----------------------------------------------------------------------------

    def create_link(
        self, name: str, *, side_a: Sequence[str] = (), side_b: Sequence[str] = ()
    ) -> LinkStatus:
        """Create a link with the given endpoints; on any error nothing changes."""
        if not _LINK_NAME.match(name):
            raise InvalidName(
                f"invalid link name {name!r}: use letters, digits, '-', '_', '.' (max 253)"
            )
        with self._locked():
            if os.path.exists(self.pins.link_info(name)):
                raise LinkExists(f"link {name!r} already exists")
            wanted = [(Side.A, n) for n in side_a] + [(Side.B, n) for n in side_b]
            for side, names in ((Side.A, side_a), (Side.B, side_b)):
                if len(names) > structs.MAX_ENDPOINTS_PER_SIDE:
                    raise CapacityError(
                        f"side {side.value} of {name!r} lists {len(names)} interfaces,"
                        f" more than {structs.MAX_ENDPOINTS_PER_SIDE}"
                    )
            resolved: dict[int, tuple[Side, str]] = {}
            for side, ifname in wanted:
                ifindex = _ifindex(ifname)
                if ifindex in resolved:
                    raise EndpointExists(f"interface {ifname!r} is listed twice for {name!r}")
                resolved[ifindex] = (side, ifname)
            taken = self._slots()
            self._check_free(resolved, taken)
            free = [i for i in range(1, structs.MAX_IFACES) if i not in taken]
            if len(resolved) > len(free):
                raise CapacityError(f"the node has room for {structs.MAX_IFACES - 1} interfaces")
            used = self._link_ids()
            link_id = next((i for i in range(1, structs.MAX_LINKS) if i not in used), 0)
            if not link_id:
                raise CapacityError(f"the node has room for {structs.MAX_LINKS - 1} links")

            with contextlib.ExitStack() as undo:
                undo.callback(self._teardown, name, link_id)
                self._create_info(name, link_id)
                for slot, (ifindex, (side, ifname)) in zip(free, resolved.items(), strict=False):
                    self._add(name, link_id, side, ifname, ifindex, slot=slot)
                for side in Side:
                    self._install_table(link_id, side)
                undo.pop_all()
        return self.status(name)

    def _check_free(
        self, wanted: dict[int, tuple[Side, str]], taken: dict[int, EndpointEntry]
    ) -> None:
        by_ifindex = {e.ifindex: e for e in taken.values()}
        for ifindex, (_, ifname) in wanted.items():
            owner = by_ifindex.get(ifindex)
            if owner is not None or self._slot_of(ifindex) is not None:
                # Only for the message: reading every link's id costs a pin open per link.
                by_id = self._link_ids()
                link = by_id.get(owner.link_id, "?") if owner is not None else "?"
                raise EndpointExists(f"interface {ifname!r} is already an endpoint of {link!r}")

    def _create_info(self, name: str, link_id: int) -> None:
        os.makedirs(self.pins.link_dir(name), exist_ok=True)
        fd = bpf.map_create(
            bpf.BPF_MAP_TYPE_ARRAY,
            structs.LINK_INFO_MAP,
            4,
            ctypes.sizeof(structs.LinkInfoValue),
            1,
        )
        try:
            bpf.map_update(fd, ctypes.c_uint32(0), structs.LinkInfoValue(link_id=link_id))
            maps.percpu_set_zero(
                self._map(structs.MAP_LINK_STATS), ctypes.c_uint32(link_id), structs.LinkStats
            )
            bpf.obj_pin(fd, self.pins.link_info(name))
        finally:
            os.close(fd)

    def _add(
        self, link: str, link_id: int, side: Side, ifname: str, ifindex: int, *, slot: int
    ) -> EndpointEntry:
        """Register and attach one endpoint in a free slot (no table update, no validation);
        returns what the slot now holds."""
        key = ctypes.c_uint32(slot)
        maps.percpu_set_zero(self._map(structs.MAP_EP_COUNTERS), key, structs.EpCounters)
        entry = EndpointEntry(
            ifindex=ifindex,
            gen=secrets.randbits(32) | 1,
            link_id=link_id,
            side=side.num,
            state=structs.EP_ACTIVE,
            ifname=ifname.encode()[: structs.IFNAMSIZ - 1],
        )
        # The slot first, then the index that leads the program to it.
        bpf.map_update(self._map(structs.MAP_ENDPOINTS), key, entry)
        bpf.map_update(
            self._map(structs.MAP_IFSLOTS), ctypes.c_uint32(ifindex), key, bpf.BPF_NOEXIST
        )
        self._cache(ifindex, slot)
        loader.attach(self.pins, link, ifindex, self._fds.program, mode=self._attach_mode)
        return entry

    def _install_table(
        self,
        link_id: int,
        side: Side,
        *,
        without: int = 0,
        endpoints: dict[int, EndpointEntry] | None = None,
    ) -> None:
        """Build the side's Maglev table over its active endpoints and put it in use.

        ``endpoints``: the node's or link's endpoints by slot, as the caller just read (and
        changed) them, to spare reading them again (a few ms with a thousand endpoints).

        The side's table map is created once (its first insertion into the outer map waits
        for an RCU grace period in the kernel); afterwards a change rewrites the copy the
        program is not using, through an mmap, and flips the control entry: no map swap.
        """
        active = {
            e.ifname.decode(): slot
            for slot, e in (self._slots() if endpoints is None else endpoints).items()
            if e.link_id == link_id
            and e.side == side.num
            and e.state == structs.EP_ACTIVE
            and slot != without
        }
        size = structs.MAGLEV_SIZE
        outer = self._map(structs.MAP_MAGLEV)
        mkey = ctypes.c_uint32(link_id << 1 | side.num)
        table_id = maps.lookup(outer, mkey, ctypes.c_uint32)
        if table_id is None:
            if not active:
                return
            fd = bpf.map_create(
                bpf.BPF_MAP_TYPE_ARRAY,
                structs.MAGLEV_TABLE_MAP,
                4,
                ctypes.sizeof(structs.MaglevEntry),
                size + 1,
                flags=bpf.BPF_F_MMAPABLE,
            )
            try:
                with maps.MaglevTableView(fd, size) as view:
                    view.write_idle(maglev.build_table(active), 0)
                    view.flip(0)
                bpf.map_update(outer, mkey, ctypes.c_uint32(fd))
            finally:
                os.close(fd)
            return
        fd = bpf.map_fd_by_id(table_id.value)
        try:
            with maps.MaglevTableView(fd, size) as view:
                if not active:
                    view.flip(structs.MAGLEV_EMPTY)
                    return
                idle = 1 if view.active == 0 else 0
                view.write_idle(maglev.build_table(active), idle)
                view.flip(idle)
        finally:
            os.close(fd)

    def _purge(self, link_id: int, *, side: Side | None = None, slot: int = 0) -> int:
        """Delete the link's sessions (only those through ``slot`` on ``side`` if given).

        Filters whole batches at C speed (strided slices of the raw keys and values) so that
        a table of a million sessions takes a second or two, not a Python object per entry.
        """
        return sum(
            self._purge_map(name, link_id, side=side, slot=slot) for name in structs.SESSION_MAPS
        )

    def _purge_map(self, name: str, link_id: int, *, side: Side | None, slot: int) -> int:
        fd = self._map(name)
        ksize, vsize = structs.MAP_LAYOUTS[name]
        kwords, vwords = ksize // 4, vsize // 4
        doomed: list[bytes] = []
        for keys, values in maps.walk_raw(fd, ksize, vsize):
            links = keys.cast("I")[0::kwords].tolist()
            if side is None:
                hits = [i for i, lid in enumerate(links) if lid == link_id]
            else:
                slots = values.cast("I")[side.num :: vwords].tolist()
                hits = [
                    i
                    for i, (lid, s) in enumerate(zip(links, slots, strict=True))
                    if lid == link_id and s == slot
                ]
            raw = keys.tobytes()
            doomed.extend(raw[i * ksize : (i + 1) * ksize] for i in hits)
        return maps.delete_raw(fd, b"".join(doomed), ksize)

    def _session_counts(self, *, only: int = 0) -> Counter[int]:
        """Sessions per link id (of link ``only`` if given), in one walk of each session table
        (the link id is the first word of both keys)."""
        counts: Counter[int] = Counter()
        for name in structs.SESSION_MAPS:
            ksize, vsize = structs.MAP_LAYOUTS[name]
            for keys, _ in maps.walk_raw(self._map(name), ksize, vsize):
                ids = keys.cast("I")[0 :: ksize // 4].tolist()
                if only:
                    counts[only] += ids.count(only)
                else:
                    counts.update(ids)
        return counts

    def _cache(self, ifindex: int, slot: int) -> None:
        """Point the ifindex cache entry of ``ifindex`` at ``slot`` unless another endpoint
        holds it (that one's interface then keeps the fast lookup; this one uses the hash)."""
        cache = self._map(structs.MAP_IFCACHE)
        key = ctypes.c_uint32(ifindex & (structs.IFCACHE_SIZE - 1))
        held = maps.lookup(cache, key, ctypes.c_uint32)
        if held is not None and held.value:
            holder = maps.lookup(self._map(structs.MAP_ENDPOINTS), held, EndpointEntry)
            if (
                holder is not None
                and holder.ifindex
                and self._slot_of(holder.ifindex) == held.value
            ):
                return
        bpf.map_update(cache, key, ctypes.c_uint32(slot))

    def _uncache(self, ifindex: int, slot: int) -> None:
        cache = self._map(structs.MAP_IFCACHE)
        key = ctypes.c_uint32(ifindex & (structs.IFCACHE_SIZE - 1))
        held = maps.lookup(cache, key, ctypes.c_uint32)
        if held is not None and held.value == slot:
            bpf.map_update(cache, key, ctypes.c_uint32(0))

    def _remove(self, link: str, slot: int, ifindex: int) -> None:
        """Detach one endpoint and free its slot (the indexes first, then the slot)."""
        loader.detach(self.pins, link, ifindex)
        self._uncache(ifindex, slot)
        if self._slot_of(ifindex) == slot:
            bpf.map_delete(self._map(structs.MAP_IFSLOTS), ctypes.c_uint32(ifindex))
        bpf.map_update(self._map(structs.MAP_ENDPOINTS), ctypes.c_uint32(slot), EndpointEntry())
        maps.percpu_set_zero(
            self._map(structs.MAP_EP_COUNTERS), ctypes.c_uint32(slot), structs.EpCounters
        )

    def _teardown(self, name: str, link_id: int) -> None:
        """Remove everything of a link, tolerating parts that are already gone."""
        for side in Side:
            mkey = ctypes.c_uint32(link_id << 1 | side.num)
            bpf.map_delete(self._map(structs.MAP_MAGLEV), mkey)
        for slot, e in self._endpoints(link_id).items():
            self._remove(name, slot, e.ifindex)
        self._purge(link_id)
        maps.percpu_set_zero(
            self._map(structs.MAP_LINK_STATS), ctypes.c_uint32(link_id), structs.LinkStats
        )
        folder = self.pins.link_dir(name)
        if os.path.isdir(folder):
            for entry in os.listdir(folder):
                if entry.startswith("tcx_"):
                    loader.detach(self.pins, name, int(entry[4:]))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.pins.link_info(name))
            os.rmdir(folder)

    def delete_link(self, name: str) -> None:
        """Detach the link's endpoints, purge its sessions and remove its pins."""
        with self._locked():
            self._teardown(name, self._link_id(name))

    def _find(
        self, link_id: int, link: str, side: Side, ifname: str, endpoints: dict[int, EndpointEntry]
    ) -> tuple[int, EndpointEntry]:
        """The slot and entry of ``ifname`` among ``endpoints`` (the link's, by slot)."""
        endpoints = {k: e for k, e in endpoints.items() if e.side == side.num}
        with contextlib.suppress(InterfaceNotFound):
            ifindex = _ifindex(ifname)
            for slot, e in endpoints.items():
                if e.ifindex == ifindex:
                    return slot, e
        # The interface may be gone (its pod deleted): fall back to the recorded name.
        for slot, e in endpoints.items():
            if e.ifname.decode() == ifname:
                return slot, e
        raise EndpointNotFound(f"{ifname!r} is not an endpoint of side {side.value} of {link!r}")

    def add_endpoint(self, link: str, side: Side, ifname: str) -> None:
        """Add an active endpoint: it gets new flows at once; other flows are not disturbed."""
        side = Side(side)
        with self._locked():
            link_id = self._link_id(link)
            ifindex = _ifindex(ifname)
            taken = self._slots()
            self._check_free({ifindex: (side, ifname)}, taken)
            count = sum(1 for e in taken.values() if e.link_id == link_id and e.side == side.num)
            if count >= structs.MAX_ENDPOINTS_PER_SIDE:
                raise CapacityError(
                    f"side {side.value} of {link!r} already has {count} endpoints,"
                    f" the most a side can have"
                )
            slot = next((i for i in range(1, structs.MAX_IFACES) if i not in taken), 0)
            if not slot:
                raise CapacityError(f"the node has room for {structs.MAX_IFACES - 1} interfaces")
            with contextlib.ExitStack() as undo:
                undo.callback(self._remove, link, slot, ifindex)
                taken[slot] = self._add(link, link_id, side, ifname, ifindex, slot=slot)
                self._install_table(link_id, side, endpoints=taken)
                undo.pop_all()

    def _set_state(self, link: str, side: Side, ifname: str, state: int) -> None:
        with self._locked():
            link_id = self._link_id(link)
            endpoints = self._endpoints(link_id)
            slot, entry = self._find(link_id, link, side, ifname, endpoints)
            if entry.state != state:
                entry.state = state  # the same object as in ``endpoints``
                bpf.map_update(self._map(structs.MAP_ENDPOINTS), ctypes.c_uint32(slot), entry)
                self._install_table(link_id, side, endpoints=endpoints)

    def drain_endpoint(self, link: str, side: Side, ifname: str) -> None:
        """Keep the endpoint's sessions but give it no new flows."""
        self._set_state(link, Side(side), ifname, structs.EP_DRAINING)

    def activate_endpoint(self, link: str, side: Side, ifname: str) -> None:
        """Undo a drain: the endpoint gets new flows again."""
        self._set_state(link, Side(side), ifname, structs.EP_ACTIVE)

    def remove_endpoint(self, link: str, side: Side, ifname: str) -> None:
        """Remove an endpoint and purge its sessions; its flows move to the remaining ones."""
        side = Side(side)
        with self._locked():
            link_id = self._link_id(link)
            endpoints = self._endpoints(link_id)
            slot, entry = self._find(link_id, link, side, ifname, endpoints)
            self._install_table(link_id, side, without=slot, endpoints=endpoints)
            self._remove(link, slot, entry.ifindex)
            self._purge(link_id, side=side, slot=slot)

    def destroy(self) -> None:
        """Remove every link and the node-wide pins under the root, then close."""
        with self._locked():
            for name in self.links():
                self._teardown(name, self._link_id(name))
            loader.unpin_node(self.pins)
            with contextlib.suppress(OSError):
                for entry in os.listdir(self.pins.links_dir):  # half-created folders
                    os.rmdir(self.pins.link_dir(entry))
                os.rmdir(self.pins.links_dir)
        self.close()
        with contextlib.suppress(OSError):
            os.rmdir(self.root)
