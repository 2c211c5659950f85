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
import errno
import fcntl
import ipaddress
import os
import re
import secrets
import socket
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from sfc_k8s.api.models import EndpointState, Side
from sfc_k8s.dataplane import _libbpf as bpf
from sfc_k8s.dataplane import loader, maglev, maps, structs, tunnel
from sfc_k8s.dataplane import upgrade as upgrade_
from sfc_k8s.dataplane.errors import (
    BpfError,
    CapacityError,
    DataplaneError,
    EndpointExists,
    EndpointNotFound,
    InterfaceNotFound,
    InvalidName,
    InvalidValue,
    LinkExists,
    LinkNotFound,
)
from sfc_k8s.dataplane.records import (
    NODE_DROPS,
    DropReason,
    Endpoint,
    EndpointCounters,
    EndpointSpec,
    LinkStatus,
    Session,
    TunnelStatus,
)
from sfc_k8s.dataplane.structs import (
    EndpointEntry,
    EpRef,
    FlowKey,
    FlowKey4,
    FlowKind,
    LinkInfoValue,
    SessionValue,
)

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


@dataclass
class _Resolved:
    """An endpoint about to be added: its side, what was asked, its interface (local) or
    packed node address (remote), and its stable id once assigned."""

    side: Side
    spec: EndpointSpec
    ifindex: int
    node: bytes
    id: int = 0


def _state(raw: int) -> EndpointState:
    return EndpointState.DRAINING if raw == structs.EP_DRAINING else EndpointState.ACTIVE


def _ifindex(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError as err:
        raise InterfaceNotFound(f"no interface named {ifname!r}: {err}") from err


_SIOCGIFMTU = 0x8921  # linux/sockios.h
_IFREQ_SIZE = 40  # struct ifreq: the name (IFNAMSIZ 16) and a union whose first int is the MTU


def _interface_mtu(ifname: str) -> int | None:
    """The MTU of ``ifname`` in this process's network namespace, None if there is none.

    Asked of the kernel through a socket (which belongs to our namespace), not read from
    /sys/class/net: sysfs shows the namespace of whoever mounted it, and an agent that entered
    its node's namespace with ``nsenter --net`` (the local cluster) keeps the host's."""
    request = ifname.encode().ljust(_IFREQ_SIZE, b"\0")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            answer = fcntl.ioctl(sock.fileno(), _SIOCGIFMTU, request)
    except OSError:
        return None
    return int.from_bytes(answer[16:20], sys.byteorder, signed=True)


def _node_address(node: str) -> bytes:
    """The packed underlay IPv4 address of a remote endpoint's node."""
    try:
        address = ipaddress.IPv4Address(node)
    except ValueError as err:
        raise InvalidValue(
            f"invalid node address {node!r}: expected an IPv4 address such as 10.0.0.2"
        ) from err
    if address.is_unspecified or address.is_multicast or address.is_loopback:
        raise InvalidValue(f"invalid node address {node!r}: expected a unicast IPv4 address")
    return address.packed


def _display(e: EndpointEntry) -> str:
    """An endpoint as people see it: its interface, or ``#ID@NODE`` when remote."""
    return f"#{e.id}@{e.node_address}" if e.remote else e.ifname.decode()


def _no_counters(_slot: int) -> None:
    """The counter reader of a read that does not want counters (they stay zero)."""
    return None


def _check_id(what: str, value: int, top: int) -> None:
    if not 0 <= value <= top:
        raise InvalidValue(f"invalid {what} {value}: expected 1 to {top} (or 0 to assign one)")


def _assign_ids(specs: Sequence[EndpointSpec], used: set[int], link: str) -> list[int]:
    """The stable id of each of ``specs``: the one given, else the lowest free one; ``used``
    (the link's ids) grows with them."""
    for spec in specs:
        _check_id("endpoint id", spec.id, structs.MAX_EP_ID)
        if spec.id and spec.id in used:
            raise EndpointExists(f"endpoint id {spec.id} is already taken in {link!r}")
        if spec.id:
            used.add(spec.id)
    ids = []
    free = (i for i in range(1, structs.MAX_EP_ID + 1) if i not in used)
    for spec in specs:
        if spec.id:
            ids.append(spec.id)
            continue
        chosen = next(free, 0)
        if not chosen:
            raise CapacityError(f"link {link!r} has no free endpoint id left")
        used.add(chosen)
        ids.append(chosen)
    return ids


class Dataplane:
    """The node's data plane under one bpffs root.

    Mounts bpffs if needed, then adopts the pinned program and maps under ``root`` or, when
    there are none, loads the eBPF object and pins them. ``session_table_size`` applies only
    to that first load (a pinned session table keeps its size). ``attach_mode`` is "auto"
    (TCX, clsact if the kernel has no TCX), "tcx" or "tc".

    Pinned programs of another build than this process's object are replaced in place on
    every attached interface, keeping the maps (``upgrade``; False only adopts them, for
    removal); ``opened`` says what happened. ``object_path``: the compiled object (tests
    load other builds of it).
    """

    def __init__(
        self,
        root: str = DEFAULT_BPFFS_ROOT,
        *,
        session_table_size: int = structs.SESSIONS_DEFAULT,
        attach_mode: str = "auto",
        upgrade: bool = True,
        object_path: Path = loader.OBJECT_PATH,
    ) -> None:
        if session_table_size < 1:
            raise DataplaneError(f"session table size must be positive, not {session_table_size}")
        self.root = root
        self.pins = loader.Pins(root)
        self._attach_mode = attach_mode
        self._lock_fd = -1
        self._thread_lock = threading.Lock()
        self._slot_hint = 1  # where _free_slots starts looking
        self._link_hint = 1  # where _claim_link_id starts trying
        self._cid_hint = 1  # where an unasked cluster id is looked for
        loader.ensure_bpffs()
        try:
            os.makedirs(self.pins.links_dir, exist_ok=True)
        except OSError as err:
            raise DataplaneError(f"failed to create {self.pins.links_dir!r}: {err}") from err
        self._lock_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with self._locked():
                self._fds, self.opened = upgrade_.load_or_upgrade(
                    self.pins,
                    session_table_size=session_table_size,
                    object_path=object_path,
                    upgrade=upgrade,
                )
                self._ensure_link_id_markers()
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

    @property
    def tunnel_program_fd(self) -> int:
        """The tunnel's receive program (for BPF_PROG_TEST_RUN)."""
        return self._fds.tunnel_program

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

    def _link_info(self, name: str) -> LinkInfoValue:
        """The link's node-local and cluster-wide ids."""
        if not _LINK_NAME.match(name) or not os.path.exists(self.pins.link_info(name)):
            raise LinkNotFound(f"no link named {name!r} under {self.root!r}")
        try:
            fd = bpf.obj_get(self.pins.link_info(name))
        except BpfError as err:
            # Deleted between the check above and the open (another thread or process
            # deleting the link while this one reads): the link is gone, not broken.
            if err.errno == errno.ENOENT:
                raise LinkNotFound(f"no link named {name!r} under {self.root!r}") from err
            raise
        try:
            info = maps.lookup(fd, ctypes.c_uint32(0), LinkInfoValue)
        finally:
            os.close(fd)
        if info is None or info.link_id == 0:
            raise LinkNotFound(f"link {name!r} has no id (half-created): delete it and retry")
        return info

    def _link_id(self, name: str) -> int:
        return int(self._link_info(name).link_id)

    def _link_ids(self) -> dict[int, str]:
        return {self._link_id(name): name for name in self.links()}

    def _slots(self) -> dict[int, EndpointEntry]:
        """Every endpoint of the node, local and remote, by slot (found through the stable id
        index, so the cost follows the number of endpoints, not the size of the array)."""
        index = self._map(structs.MAP_EPIDS)
        array = self._map(structs.MAP_ENDPOINTS)
        result = {}
        for ref, slot in maps.walk(index, EpRef, ctypes.c_uint32):
            entry = maps.lookup(array, slot, EndpointEntry)
            if (
                entry is not None
                and entry.gen
                and (entry.link_id, entry.id) == (ref.link_id, ref.id)
            ):
                result[slot.value] = entry
        return result

    def _endpoints(self, link_id: int, side: Side | None = None) -> dict[int, EndpointEntry]:
        """The link's endpoints by slot. The stable id index is read in batches and filtered
        on its first key word (the link id) without a Python object per entry; only the link's
        own slots are then looked up, so a reconcile does not pay a lookup per endpoint of the
        node (8,000 of them with 1,000 links)."""
        found = self._endpoints_of({link_id}).get(link_id, {})
        return {k: e for k, e in found.items() if side is None or e.side == side.num}

    def _endpoints_of(self, link_ids: set[int]) -> dict[int, dict[int, EndpointEntry]]:
        """The endpoints by slot of each of ``link_ids``, in one read of the stable id index
        (what a read for every link costs once, not once per link)."""
        array = self._map(structs.MAP_ENDPOINTS)
        result: dict[int, dict[int, EndpointEntry]] = {}
        for keys, values in maps.walk_raw(self._map(structs.MAP_EPIDS), 8, 4):
            links = keys.cast("I")[0::2].tolist()
            slots = values.cast("I").tolist()
            for i in (i for i, lid in enumerate(links) if lid in link_ids):
                entry = maps.lookup(array, ctypes.c_uint32(slots[i]), EndpointEntry)
                if entry is not None and entry.gen and entry.link_id == links[i]:
                    result.setdefault(links[i], {})[slots[i]] = entry
        return result

    def _free_slots(self, count: int) -> list[int]:
        """``count`` free endpoint slots (gen 0), looked for from where the last search of
        this process ended (slots are taken and freed under the root's lock, so a slot seen
        free here is free): a few lookups, not a read of every endpoint of the node."""
        array = self._map(structs.MAP_ENDPOINTS)
        top = structs.MAX_IFACES - 1
        found: list[int] = []
        start = self._slot_hint
        for step in range(top):
            slot = (start - 1 + step) % top + 1
            entry = maps.lookup(array, ctypes.c_uint32(slot), EndpointEntry)
            if entry is not None and not entry.gen:
                found.append(slot)
                if len(found) == count:
                    self._slot_hint = slot % top + 1
                    return found
        raise CapacityError(f"the node has room for {top} endpoints")

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

    def _counters_of(self, slots: set[int]) -> dict[int, EndpointCounters]:
        """The counters of ``slots``, summed over CPUs, in one batch walk of the per-CPU
        counters array (a few calls for all its slots) instead of a lookup per slot: the cost
        no longer follows the endpoints read, which for a scrape or a traffic sample is every
        endpoint of the node."""
        sums = maps.percpu_array_sums(self._map(structs.MAP_EP_COUNTERS), structs.EpCounters, slots)
        return {slot: EndpointCounters(*fields) for slot, fields in sums.items()}

    def _local_entries(self) -> dict[int, EndpointEntry]:
        """Every local endpoint of the node by slot, in one batch walk of the endpoint array
        (the free slots and remote endpoints filtered on raw words, no object per entry)."""
        size = ctypes.sizeof(EndpointEntry)
        gen_word = EndpointEntry.gen.offset // 4
        node_word = EndpointEntry.node.offset // 4
        stride = size // 4
        result: dict[int, EndpointEntry] = {}
        for keys, values in maps.walk_raw(self._map(structs.MAP_ENDPOINTS), 4, size):
            slots = keys.cast("I")
            words = values.cast("I")
            gens, nodes = words[gen_word::stride], words[node_word::stride]
            for i in (i for i, (g, n) in enumerate(zip(gens, nodes, strict=True)) if g and not n):
                result[slots[i]] = EndpointEntry.from_buffer_copy(values, i * size)
        return result

    def local_counters(self) -> dict[str, EndpointCounters]:
        """The counters of every local endpoint of the node by host interface (an interface
        is an endpoint of one link at most), in two batch walks whatever the number of links:
        what the agent's traffic sampler reads every second.

        Safe in a worker thread while another thread changes links, like
        ``endpoint_sessions``: node-wide maps only, no lock, each entry consistent; an
        endpoint added or removed meanwhile may be missing or still counted."""
        entries = self._local_entries()
        counters = self._counters_of(set(entries))
        return {
            e.ifname.decode(): counters.get(slot, EndpointCounters()) for slot, e in entries.items()
        }

    def _sessions_raw(self, link_id: int) -> Iterator[tuple[FlowKey, SessionValue]]:
        for key4, value in maps.walk(self._map(structs.MAP_SESSIONS4), FlowKey4, SessionValue):
            if key4.link_id == link_id:
                yield key4.flow_key(), value
        for key, value in maps.walk(self._map(structs.MAP_SESSIONS), FlowKey, SessionValue):
            if key.link_id == link_id:
                yield key, value

    def status(self, link: str) -> LinkStatus:
        return self._status(link, self._link_info(link), None)

    def statuses(self) -> list[LinkStatus]:
        """The status of every link, reading the session table, the endpoints and their
        counters once for all of them. A link deleted meanwhile (by another thread: the
        agent renders its metrics in a worker thread) is left out."""
        counts = self._session_counts()
        infos = {}
        for name in self.links():
            with contextlib.suppress(LinkNotFound):
                infos[name] = self._link_info(name)
        grouped = self._endpoints_of({int(i.link_id) for i in infos.values()})
        batch = self._counters_of({slot for slots in grouped.values() for slot in slots})
        return [
            self._status(name, info, counts, grouped.get(int(info.link_id), {}), counters=batch.get)
            for name, info in infos.items()
        ]

    def endpoints_of(
        self, links: Sequence[str], *, counters: bool = True
    ) -> dict[str, list[Endpoint]]:
        """``endpoints`` of several links in one read of the endpoint index (a link that does
        not exist is left out)."""
        ids: dict[int, str] = {}
        for name in links:
            with contextlib.suppress(LinkNotFound):
                ids[self._link_id(name)] = name
        grouped = self._endpoints_of(set(ids))
        read = self._counter_reader(counters)
        return {
            name: self._endpoint_list(lid, grouped.get(lid, {}), read) for lid, name in ids.items()
        }

    def endpoints(self, link: str, *, counters: bool = True) -> list[Endpoint]:
        """The link's endpoints (sorted by side and name) with their counters, without
        reading the session table: ``status`` counts the link's sessions by walking the whole
        node-wide table, which a reconcile loop that only needs the endpoints should not pay.
        ``counters=False`` leaves the counters at zero and saves a per-CPU lookup per
        endpoint: what a reconcile, which plans from states and names only, asks for."""
        link_id = self._link_id(link)
        return self._endpoint_list(
            link_id, self._endpoints(link_id), self._counter_reader(counters)
        )

    def _counter_reader(self, counters: bool) -> Callable[[int], EndpointCounters | None]:
        return self._counters if counters else _no_counters

    def _endpoint_list(
        self,
        link_id: int,
        slots: dict[int, EndpointEntry],
        counters: Callable[[int], EndpointCounters | None] | None = None,
    ) -> list[Endpoint]:
        """The endpoints of ``slots``, each with ``counters(slot)`` (zero when None)."""
        read = counters or self._counters
        endpoints = [
            Endpoint(
                side=Side.from_index(e.side),
                ifname=e.ifname.decode(),
                ifindex=e.ifindex,
                state=_state(e.state),
                counters=read(slot) or EndpointCounters(),
                id=e.id,
                node=e.node_address,
            )
            for slot, e in slots.items()
        ]
        # Local endpoints by name, then remote ones by node and id.
        endpoints.sort(key=lambda e: (e.side.value, bool(e.node), e.node, e.ifname, e.id))
        return endpoints

    def _status(
        self,
        link: str,
        info: LinkInfoValue,
        counts: Counter[int] | None,
        slots: dict[int, EndpointEntry] | None = None,
        *,
        counters: Callable[[int], EndpointCounters | None] | None = None,
    ) -> LinkStatus:
        link_id = int(info.link_id)
        if slots is None:
            slots = self._endpoints(link_id)
        endpoints = self._endpoint_list(link_id, slots, counters)
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
            cluster_id=int(info.cluster_id),
        )

    def endpoint_sessions(self) -> dict[str, int]:
        """Live sessions per local endpoint of the node, by host interface, in one walk of each
        session table: a session counts for the endpoint each of its sides names, while that
        endpoint's generation is the one the session recorded (a removed endpoint's slot,
        reused, does not inherit its sessions).

        Safe in a worker thread while another thread changes links (the agent's traffic
        endpoint runs it so, off its event loop): it reads node-wide maps only, takes no lock,
        and the kernel keeps each entry consistent; an entry changed mid-walk may be counted
        as it was or as it is."""
        named: Counter[tuple[int, int]] = Counter()  # (slot, gen) -> sessions naming it
        for name in structs.SESSION_MAPS:
            ksize, vsize = structs.MAP_LAYOUTS[name]
            stride = vsize // 4  # struct sfc_session: slot[2], gen[2], all u32
            for _, values in maps.walk_raw(self._map(name), ksize, vsize):
                words = values.cast("I")
                for side in (0, 1):
                    named.update(zip(words[side::stride], words[2 + side :: stride], strict=True))
        return {
            e.ifname.decode(): named[(slot, int(e.gen))]
            for slot, e in self._slots().items()
            if not e.remote
        }

    def sessions(self, link: str) -> list[Session]:
        """The link's sessions, with the endpoint on each side ("" if it left the link;
        ``#ID@NODE`` for a remote one)."""
        link_id = self._link_id(link)
        slots = self._endpoints(link_id)
        result = []
        for key, value in self._sessions_raw(link_id):
            names, ifindexes = [], []
            for side in (0, 1):
                e = slots.get(value.slot[side])
                ok = e is not None and e.side == side and e.gen == value.gen[side]
                names.append(_display(e) if ok and e is not None else "")
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
        self,
        name: str,
        *,
        side_a: Sequence[str | EndpointSpec] = (),
        side_b: Sequence[str | EndpointSpec] = (),
        cluster_id: int = 0,
    ) -> LinkStatus:
        """Create a link with the given endpoints; on any error nothing changes.

        An endpoint is an interface name (local, its id assigned) or an ``EndpointSpec``
        (local or remote, with its stable id). ``cluster_id`` is the link's id across the
        cluster (the controller's; 0: the lowest one free on this node).
        """
        if not _LINK_NAME.match(name):
            raise InvalidName(
                f"invalid link name {name!r}: use letters, digits, '-', '_', '.' (max 253)"
            )
        _check_id("link cluster id", cluster_id, structs.MAX_CLUSTER_LINKS - 1)
        specs = [
            (side, EndpointSpec(ifname=e) if isinstance(e, str) else e)
            for side, listed in ((Side.A, side_a), (Side.B, side_b))
            for e in listed
        ]
        with self._locked():
            if os.path.exists(self.pins.link_info(name)):
                raise LinkExists(f"link {name!r} already exists")
            for side, listed in ((Side.A, side_a), (Side.B, side_b)):
                if len(listed) > structs.MAX_ENDPOINTS_PER_SIDE:
                    raise CapacityError(
                        f"side {side.value} of {name!r} lists {len(listed)} endpoints,"
                        f" more than {structs.MAX_ENDPOINTS_PER_SIDE}"
                    )
            resolved = self._resolve(name, specs, set())
            self._check_free(resolved)
            free = self._free_slots(len(resolved)) if resolved else []
            info = self._new_link_ids(cluster_id)

            with contextlib.ExitStack() as undo:
                undo.callback(self._teardown, name, info.link_id)
                self._create_info(name, info)
                # The new link's endpoints are exactly those added here: the tables are
                # built from them instead of reading every endpoint of the node again.
                added = {
                    slot: self._add(name, info, endpoint, slot=slot)
                    for slot, endpoint in zip(free, resolved, strict=False)
                }
                for side in Side:
                    self._install_table(info, side, endpoints=added)
                undo.pop_all()
            # No session walk: a link id's sessions were purged when its last holder went.
            return self._status(name, info, Counter(), added)

    def _new_link_ids(self, cluster_id: int) -> LinkInfoValue:
        """A node-local link id (claimed: ``_teardown`` releases it), and ``cluster_id`` (or
        a free one). A few lookups and a mkdir: reading every link's info pin, as this did
        before, cost ~45 µs per link of the node for each create (quadratic over a node's
        links)."""
        clinks = self._map(structs.MAP_CLINKS)
        if cluster_id:
            held = maps.lookup(clinks, ctypes.c_uint32(cluster_id), ctypes.c_uint32)
            if held is not None and held.value:
                owner = self._name_of(held.value)  # the error path only reads every link
                raise LinkExists(f"link cluster id {cluster_id} is taken by {owner!r}")
        else:
            top = structs.MAX_CLUSTER_LINKS - 1
            for step in range(top):
                candidate = (self._cid_hint - 1 + step) % top + 1
                held = maps.lookup(clinks, ctypes.c_uint32(candidate), ctypes.c_uint32)
                if held is None or not held.value:
                    cluster_id, self._cid_hint = candidate, candidate % top + 1
                    break
            else:
                raise CapacityError(f"no free link cluster id left (1 to {top})")
        return LinkInfoValue(link_id=self._claim_link_id(), cluster_id=cluster_id)

    def _claim_link_id(self) -> int:
        """Claim a free node-local link id: mkdir of its marker fails if another link holds it."""
        top = structs.MAX_LINKS - 1
        for step in range(top):
            candidate = (self._link_hint - 1 + step) % top + 1
            try:
                os.mkdir(self.pins.link_id_marker(candidate))
            except FileExistsError:
                continue
            self._link_hint = candidate % top + 1
            return candidate
        raise CapacityError(f"the node has room for {top} links")

    def _ensure_link_id_markers(self) -> None:
        """Give a root pinned before link id markers existed one marker per link (once: the
        markers are built aside and renamed into place, so a crash leaves none or all)."""
        if os.path.isdir(self.pins.link_ids_dir):
            return
        building = self.pins.link_ids_dir + "-new"
        with contextlib.suppress(FileNotFoundError):
            for entry in os.listdir(building):
                os.rmdir(os.path.join(building, entry))
            os.rmdir(building)
        os.mkdir(building)
        for name in self.links():
            with contextlib.suppress(LinkNotFound):
                os.makedirs(os.path.join(building, str(self._link_id(name))), exist_ok=True)
        os.rename(building, self.pins.link_ids_dir)

    def cluster_id(self, link: str) -> int:
        """The link's cluster-wide id (one pin read, no session walk as in ``status``)."""
        return int(self._link_info(link).cluster_id)

    def _name_of(self, link_id: int) -> str:
        return self._link_ids().get(link_id, "?")

    def _resolve(
        self, link: str, specs: Sequence[tuple[Side, EndpointSpec]], used_ids: set[int]
    ) -> list[_Resolved]:
        """Check ``specs`` and give each its side, id, ifindex (local) or node (remote)."""
        resolved: list[_Resolved] = []
        seen: set[int] = set()
        for side, spec in specs:
            if bool(spec.ifname) == bool(spec.node):
                raise InvalidValue(
                    f"an endpoint of {link!r} names {spec.ifname!r} and node {spec.node!r}:"
                    " expected an interface (local) or a node address (remote), not both"
                )
            if spec.node:
                if not spec.id:
                    raise InvalidValue(
                        f"remote endpoint on node {spec.node!r} of {link!r} has no id:"
                        " a remote endpoint needs its stable id (1 to"
                        f" {structs.MAX_EP_ID})"
                    )
                resolved.append(_Resolved(side, spec, 0, _node_address(spec.node)))
                continue
            ifindex = _ifindex(spec.ifname)
            if ifindex in seen:
                raise EndpointExists(f"interface {spec.ifname!r} is listed twice for {link!r}")
            seen.add(ifindex)
            resolved.append(_Resolved(side, spec, ifindex, b""))
        for endpoint, ep_id in zip(
            resolved, _assign_ids([r.spec for r in resolved], used_ids, link), strict=True
        ):
            endpoint.id = ep_id
        return resolved

    def _check_free(self, wanted: Sequence[_Resolved]) -> None:
        """Refuse an interface that is already an endpoint (the ifindex index, one lookup each)."""
        for endpoint in wanted:
            if not endpoint.ifindex:
                continue
            slot = self._slot_of(endpoint.ifindex)
            if slot is not None:
                owner = maps.lookup(
                    self._map(structs.MAP_ENDPOINTS), ctypes.c_uint32(slot), EndpointEntry
                )
                # Only for the message: reading every link's id costs a pin open per link.
                link = self._name_of(owner.link_id) if owner is not None and owner.gen else "?"
                raise EndpointExists(
                    f"interface {endpoint.spec.ifname!r} is already an endpoint of {link!r}"
                )

    def _create_info(self, name: str, info: LinkInfoValue) -> None:
        os.makedirs(self.pins.link_dir(name), exist_ok=True)
        fd = bpf.map_create(
            bpf.BPF_MAP_TYPE_ARRAY,
            structs.LINK_INFO_MAP,
            4,
            ctypes.sizeof(LinkInfoValue),
            1,
        )
        try:
            bpf.map_update(fd, ctypes.c_uint32(0), info)
            maps.percpu_set_zero(
                self._map(structs.MAP_LINK_STATS), ctypes.c_uint32(info.link_id), structs.LinkStats
            )
            bpf.obj_pin(fd, self.pins.link_info(name))
        finally:
            os.close(fd)
        # Last: the tunnel's receive path finds the link from here on.
        bpf.map_update(
            self._map(structs.MAP_CLINKS),
            ctypes.c_uint32(info.cluster_id),
            ctypes.c_uint32(info.link_id),
        )

    def _add(
        self, link: str, info: LinkInfoValue, endpoint: _Resolved, *, slot: int
    ) -> EndpointEntry:
        """Register (and attach, if local) one endpoint in a free slot (no table update, no
        validation); returns what the slot now holds."""
        key = ctypes.c_uint32(slot)
        maps.percpu_set_zero(self._map(structs.MAP_EP_COUNTERS), key, structs.EpCounters)
        entry = EndpointEntry(
            ifindex=endpoint.ifindex,
            gen=secrets.randbits(32) | 1,
            link_id=info.link_id,
            side=endpoint.side.num,
            state=structs.EP_ACTIVE,
            id=endpoint.id,
            link_cid=info.cluster_id,
            ifname=endpoint.spec.ifname.encode()[: structs.IFNAMSIZ - 1],
        )
        if endpoint.node:
            entry.node[:] = list(endpoint.node)
        # The slot first, then the indexes that lead the program to it.
        bpf.map_update(self._map(structs.MAP_ENDPOINTS), key, entry)
        bpf.map_update(
            self._map(structs.MAP_EPIDS),
            EpRef(link_id=info.link_id, id=endpoint.id),
            key,
            bpf.BPF_NOEXIST,
        )
        if endpoint.node:
            self._count_node(endpoint.node, +1)
        if endpoint.ifindex:
            bpf.map_update(
                self._map(structs.MAP_IFSLOTS),
                ctypes.c_uint32(endpoint.ifindex),
                key,
                bpf.BPF_NOEXIST,
            )
            self._cache(endpoint.ifindex, slot)
            # Attached when its pod appeared (the agent): the maps above are all it takes.
            # Otherwise (an interface made by hand, a kernel without TCX, an agent that was
            # down) the link attaches it, and detaches it when the endpoint leaves.
            if not self._attached_at_appearance(endpoint.ifindex):
                loader.attach(
                    self.pins, link, endpoint.ifindex, self._fds.program, mode=self._attach_mode
                )
        return entry

    def _install_table(
        self,
        info: LinkInfoValue,
        side: Side,
        *,
        without: int = 0,
        endpoints: dict[int, EndpointEntry] | None = None,
    ) -> None:
        """Build the side's Maglev table over its active endpoints and put it in use.

        The table is built from the endpoints' stable ids and the link's cluster id only, so
        every node holding the same endpoints builds the same table.

        ``endpoints``: the node's or link's endpoints by slot, as the caller just read (and
        changed) them, to spare reading them again (a few ms with a thousand endpoints).

        The side's table map is created once (its first insertion into the outer map waits
        for an RCU grace period in the kernel); afterwards a change rewrites the copy the
        program is not using, through an mmap, and flips the control entry: no map swap.
        """
        link_id = int(info.link_id)
        active = {
            maglev.endpoint_name(info.cluster_id, e.id): slot
            for slot, e in (self._endpoints(link_id) if endpoints is None else endpoints).items()
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

    def _remove(self, link: str, slot: int, entry: EndpointEntry) -> None:
        """Detach one endpoint (if local) and free its slot (the indexes first, then the
        slot)."""
        ifindex = int(entry.ifindex)
        if ifindex:
            # An interface attached at its appearance keeps its program (pass-through again
            # once the slot is cleared) until the interface goes; the link's own is detached.
            if os.path.exists(self.pins.attachment(link, ifindex)) or not os.path.exists(
                self.pins.interface_attachment(ifindex)
            ):
                loader.detach(self.pins, link, ifindex)
            self._uncache(ifindex, slot)
            if self._slot_of(ifindex) == slot:
                bpf.map_delete(self._map(structs.MAP_IFSLOTS), ctypes.c_uint32(ifindex))
        ref = EpRef(link_id=entry.link_id, id=entry.id)
        held = maps.lookup(self._map(structs.MAP_EPIDS), ref, ctypes.c_uint32)
        if held is not None and held.value == slot:
            bpf.map_delete(self._map(structs.MAP_EPIDS), ref)
            # Counted in right after the index entry was made (``_add``).
            if entry.remote:
                self._count_node(bytes(entry.node), -1)
        bpf.map_update(self._map(structs.MAP_ENDPOINTS), ctypes.c_uint32(slot), EndpointEntry())
        maps.percpu_set_zero(
            self._map(structs.MAP_EP_COUNTERS), ctypes.c_uint32(slot), structs.EpCounters
        )

    def _count_node(self, node: bytes, delta: int) -> None:
        """Count a remote endpoint on ``node`` in or out of the known nodes (the tunnel's
        receive path accepts packets from a node only while it counts one)."""
        fd = self._map(structs.MAP_NODES)
        key = ctypes.c_uint32(int.from_bytes(node, "little"))  # the address's bytes in memory
        held = maps.lookup(fd, key, ctypes.c_uint32)
        count = (0 if held is None else held.value) + delta
        if count > 0:
            bpf.map_update(fd, key, ctypes.c_uint32(count))
        elif held is not None:
            bpf.map_delete(fd, key)

    def _teardown(self, name: str, link_id: int) -> None:
        """Remove everything of a link, tolerating parts that are already gone."""
        with contextlib.suppress(LinkNotFound):
            cid = ctypes.c_uint32(self._link_info(name).cluster_id)
            held = maps.lookup(self._map(structs.MAP_CLINKS), cid, ctypes.c_uint32)
            if held is not None and held.value == link_id:
                bpf.map_update(self._map(structs.MAP_CLINKS), cid, ctypes.c_uint32(0))
        for side in Side:
            mkey = ctypes.c_uint32(link_id << 1 | side.num)
            bpf.map_delete(self._map(structs.MAP_MAGLEV), mkey)
        for slot, e in self._endpoints(link_id).items():
            self._remove(name, slot, e)
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
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(self.pins.link_id_marker(link_id))

    def delete_link(self, name: str) -> None:
        """Detach the link's endpoints, purge its sessions and remove its pins."""
        with self._locked():
            self._teardown(name, self._link_id(name))

    def _find(
        self,
        link: str,
        side: Side,
        ifname: str,
        endpoint_id: int,
        endpoints: dict[int, EndpointEntry],
    ) -> tuple[int, EndpointEntry]:
        """The slot and entry of the endpoint named by ``ifname`` (local) or ``endpoint_id``
        among ``endpoints`` (the link's, by slot)."""
        endpoints = {k: e for k, e in endpoints.items() if e.side == side.num}
        if not ifname:
            for slot, e in endpoints.items():
                if e.id == endpoint_id:
                    return slot, e
            raise EndpointNotFound(
                f"endpoint id {endpoint_id} is not an endpoint of side {side.value} of {link!r}"
            )
        with contextlib.suppress(InterfaceNotFound):
            ifindex = _ifindex(ifname)
            for slot, e in endpoints.items():
                if e.ifindex == ifindex:
                    return slot, e
        # The interface may be gone (its pod deleted): fall back to the recorded name.
        for slot, e in endpoints.items():
            if e.ifindex and e.ifname.decode() == ifname:
                return slot, e
        raise EndpointNotFound(f"{ifname!r} is not an endpoint of side {side.value} of {link!r}")

    def add_endpoint(
        self, link: str, side: Side, ifname: str = "", *, node: str = "", endpoint_id: int = 0
    ) -> None:
        """Add an active endpoint: it gets new flows at once; other flows are not disturbed.

        Local: ``ifname`` (``endpoint_id`` optional, the lowest free one by default). Remote:
        ``node`` (its node's underlay IPv4 address) and ``endpoint_id``.
        """
        side = Side(side)
        spec = EndpointSpec(ifname=ifname, node=node, id=endpoint_id)
        with self._locked():
            info = self._link_info(link)
            taken = self._endpoints(info.link_id)  # the link's: the table is built from them
            resolved = self._resolve(link, [(side, spec)], {int(e.id) for e in taken.values()})
            self._check_free(resolved)
            count = sum(1 for e in taken.values() if e.side == side.num)
            if count >= structs.MAX_ENDPOINTS_PER_SIDE:
                raise CapacityError(
                    f"side {side.value} of {link!r} already has {count} endpoints,"
                    f" the most a side can have"
                )
            (slot,) = self._free_slots(1)
            with contextlib.ExitStack() as undo:
                entry = EndpointEntry(
                    ifindex=resolved[0].ifindex, link_id=info.link_id, id=resolved[0].id
                )
                entry.node[:] = list(resolved[0].node or bytes(4))
                undo.callback(self._remove, link, slot, entry)
                taken[slot] = self._add(link, info, resolved[0], slot=slot)
                self._install_table(info, side, endpoints=taken)
                undo.pop_all()

    def _set_state(self, link: str, side: Side, ifname: str, endpoint_id: int, state: int) -> None:
        with self._locked():
            info = self._link_info(link)
            endpoints = self._endpoints(info.link_id)
            slot, entry = self._find(link, side, ifname, endpoint_id, endpoints)
            if entry.state != state:
                entry.state = state  # the same object as in ``endpoints``
                bpf.map_update(self._map(structs.MAP_ENDPOINTS), ctypes.c_uint32(slot), entry)
                self._install_table(info, side, endpoints=endpoints)

    def drain_endpoint(
        self, link: str, side: Side, ifname: str = "", *, endpoint_id: int = 0
    ) -> None:
        """Keep the endpoint's sessions but give it no new flows (``ifname`` names a local
        endpoint, ``endpoint_id`` any)."""
        self._set_state(link, Side(side), ifname, endpoint_id, structs.EP_DRAINING)

    def activate_endpoint(
        self, link: str, side: Side, ifname: str = "", *, endpoint_id: int = 0
    ) -> None:
        """Undo a drain: the endpoint gets new flows again."""
        self._set_state(link, Side(side), ifname, endpoint_id, structs.EP_ACTIVE)

    def remove_endpoint(
        self, link: str, side: Side, ifname: str = "", *, endpoint_id: int = 0
    ) -> None:
        """Remove an endpoint and purge its sessions; its flows move to the remaining ones."""
        side = Side(side)
        with self._locked():
            info = self._link_info(link)
            endpoints = self._endpoints(info.link_id)
            slot, entry = self._find(link, side, ifname, endpoint_id, endpoints)
            self._install_table(info, side, without=slot, endpoints=endpoints)
            self._remove(link, slot, entry)
            self._purge(int(info.link_id), side=side, slot=slot)

    # --- interfaces attached when they appear -----------------------------------------------

    def _attached_at_appearance(self, ifindex: int) -> bool:
        """Whether ``ifindex`` runs the program through its own pin under ``ifaces/``.

        The pin's existence is trusted: reading the link back (``tcx_ifindex``) takes the
        kernel's rtnl lock, milliseconds on a busy node, per endpoint. A pin outlives its
        interface only until the agent sees the deletion, and the kernel hands out ifindexes
        cyclically (a deleted interface's comes back only after 2^31 others), so a pin that
        names a reused ifindex does not happen in practice; ``attach_interface`` checks."""
        return os.path.exists(self.pins.interface_attachment(ifindex))

    def attach_interface(self, ifname: str) -> bool:
        """Attach the program to host interface ``ifname`` before any link names it, as the
        agent does when a pod's interface appears: it passes every packet through (the next
        program or the stack decides) until a link's maps name the interface, and from then
        on forwards, with no attach on the link's path. Idempotent; True when it attached now.

        False, changing nothing, when the interface already runs the program (its own pin, or
        a link's), or when attachments are not TCX (``attach_mode="tc"`` or a kernel without
        TCX: the link attaches it then, as before). The pin stays when the process exits;
        ``detach_interface`` (or the interface's deletion and ``sync_interfaces``) removes it.
        """
        with self._locked():
            return self._attach_interface(_ifindex(ifname))

    def _attach_interface(self, ifindex: int) -> bool:
        if self._attach_mode == "tc":
            return False
        pin = self.pins.interface_attachment(ifindex)
        if os.path.exists(pin):
            if loader.tcx_ifindex(pin) == ifindex:
                return False
            loader.detach_at(pin, ifindex)  # a deleted interface's, whose ifindex came back
        if self._slot_of(ifindex) is not None:
            return False  # an endpoint already: its link attached it
        try:  # never the root itself: a root destroyed meanwhile stays destroyed
            os.mkdir(self.pins.ifaces_dir)
        except FileExistsError:
            pass
        except OSError as err:
            raise DataplaneError(f"cannot attach under {self.root!r}: {err}") from err
        return loader.attach_tcx(pin, ifindex, self._fds.program)

    def detach_interface(self, ifindex: int) -> bool:
        """Undo ``attach_interface`` for an interface that is gone or going (its pod deleted):
        detach and unpin. True if there was something to remove."""
        with self._locked():
            pin = self.pins.interface_attachment(ifindex)
            if not os.path.exists(pin):
                return False
            loader.detach_at(pin, ifindex)
            return True

    def interface_attachments(self) -> dict[int, int]:
        """Every interface attachment under ``ifaces/``: pinned ifindex -> the ifindex the
        kernel says it runs on (0: defunct, its interface deleted)."""
        return {
            ifindex: loader.tcx_ifindex(pin)
            for ifindex, pin in loader.tcx_pins(self.pins.ifaces_dir).items()
        }

    def sync_interfaces(
        self, present: Mapping[int, str], *, attach: bool = True
    ) -> tuple[list[str], list[int]]:
        """Make the interface attachments match ``present`` (ifindex -> name: the host
        interfaces that should run the program, e.g. every sfc-cni host end of the node):
        attach those that run nothing of ours, unpin those whose interface was deleted. What
        an agent does at start, for the pods that came and went while it was down. Returns
        the names attached (``attach=False``: to attach, left to the caller, one
        ``attach_interface`` each) and the ifindexes unpinned."""
        # Whether a pin's interface still exists is asked of the interface list, not of each
        # pinned link (reading a TCX link takes the rtnl lock: seconds for thousands of pins).
        existing = {ifindex for ifindex, _ in socket.if_nameindex()}
        with self._locked():
            pinned = loader.tcx_pins(self.pins.ifaces_dir)
            removed = []
            for ifindex, pin in sorted(pinned.items()):
                if ifindex not in existing:
                    loader.detach_at(pin, ifindex)
                    removed.append(ifindex)
            held = set(pinned)
            for link in self.links():
                held.update(loader.tcx_pins(self.pins.link_dir(link)))
            missing = [(i, n) for i, n in sorted(present.items()) if i not in held]
            if not attach:
                return [name for _, name in missing], removed
            attached = [name for ifindex, name in missing if self._attach_interface(ifindex)]
        return attached, removed

    def _remove_interface_attachments(self) -> None:
        for ifindex, pin in loader.tcx_pins(self.pins.ifaces_dir).items():
            loader.detach_at(pin, ifindex)
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(self.pins.ifaces_dir)

    # --- the tunnel ---------------------------------------------------------------------------

    def ensure_tunnel(
        self,
        *,
        ifname: str = tunnel.DEFAULT_NAME,
        port: int = tunnel.DEFAULT_PORT,
        udp_csum: bool = True,
        mtu: int = 0,
    ) -> TunnelStatus:
        """Create (or adopt) the node's tunnel device, attach the receive program to it and
        point the send path at it; idempotent (an agent calls it on every start).

        ``mtu``: the device's MTU, i.e. the underlay's minus ``tunnel.OVERHEAD_IPV4`` (0:
        leave it, 1450 on a new device); a frame that would not fit once encapsulated is
        dropped and counted (TOO_BIG). ``udp_csum``: outer UDP checksums on sent packets.
        """
        if mtu and not 68 <= mtu <= 65535:
            raise InvalidValue(f"invalid tunnel MTU {mtu}: expected 68 to 65535 (or 0)")
        with self._locked(), contextlib.ExitStack() as undo:
            device, created = tunnel.ensure(ifname, port=port, mtu=mtu)
            if created:
                undo.callback(tunnel.delete, ifname)
            os.makedirs(self.pins.tunnel_dir, exist_ok=True)
            pin = self.pins.tunnel_attachment(device.ifindex)
            for entry in os.listdir(self.pins.tunnel_dir):  # of a device deleted since
                if entry != os.path.basename(pin):
                    loader.detach_at(os.path.join(self.pins.tunnel_dir, entry), int(entry[4:]))
            if not os.path.exists(pin):
                loader.attach_at(
                    pin,
                    device.ifindex,
                    self._fds.tunnel_program,
                    self.pins.tunnel_program,
                    mode=self._attach_mode,
                )
            config = structs.TunnelConfig(
                ifindex=device.ifindex, key_flags=0 if udp_csum else structs.BPF_F_ZERO_CSUM_TX
            )
            bpf.map_update(self._map(structs.MAP_TUNNEL), ctypes.c_uint32(0), config)
            undo.pop_all()
        status = self.tunnel()
        if status is None:
            raise tunnel.TunnelError(f"tunnel device {ifname!r} vanished while being set up")
        return status

    def _tunnel_config(self) -> structs.TunnelConfig:
        config = maps.lookup(
            self._map(structs.MAP_TUNNEL), ctypes.c_uint32(0), structs.TunnelConfig
        )
        return config if config is not None else structs.TunnelConfig()

    def tunnel(self) -> TunnelStatus | None:
        """The node's tunnel, or None when it has none (or its device is gone)."""
        config = self._tunnel_config()
        if not config.ifindex:
            return None
        try:
            device = tunnel.find(socket.if_indextoname(config.ifindex))
        except OSError:
            return None
        if device is None:
            return None
        return TunnelStatus(
            ifname=device.ifname,
            ifindex=device.ifindex,
            port=device.port,
            mtu=device.mtu,
            udp_csum=not config.key_flags & structs.BPF_F_ZERO_CSUM_TX,
        )

    def oversized(self, link: str, *, tun: TunnelStatus | None = None) -> dict[str, int]:
        """The link's local interfaces whose MTU is larger than the tunnel's, with their MTU,
        when the link spans nodes (has a remote endpoint): frames they send to a remote
        endpoint at full size would be dropped as TOO_BIG. Empty for a single-node link or a
        node without a tunnel. For the agent's condition on the CrossConnection; ``tun``: the
        tunnel as the caller last saw it (``tunnel()`` runs ``ip``, milliseconds a call)."""
        tun = tun or self.tunnel()
        if tun is None:
            return {}
        endpoints = self.endpoints(link)
        if not any(e.node for e in endpoints):
            return {}
        result = {}
        for e in endpoints:
            if e.node:
                continue
            mtu = _interface_mtu(e.ifname)
            if mtu is None:
                continue  # gone: its pod is being deleted
            if mtu > tun.mtu:
                result[e.ifname] = mtu
        return result

    def tunnel_drops(self) -> dict[DropReason, int]:
        """Drops counted before any link is known (the tunnel's node-wide reasons,
        ``records.NODE_DROPS``)."""
        per_cpu = maps.percpu(
            self._map(structs.MAP_LINK_STATS), ctypes.c_uint32(0), structs.LinkStats
        )
        return {r: sum(s.drops[r] for s in per_cpu or []) for r in NODE_DROPS}

    def remove_tunnel(self) -> None:
        """Stop sending through the tunnel, detach and delete its device (idempotent)."""
        with self._locked():
            self._remove_tunnel()

    def _remove_tunnel(self) -> None:
        config = self._tunnel_config()
        bpf.map_update(self._map(structs.MAP_TUNNEL), ctypes.c_uint32(0), structs.TunnelConfig())
        if os.path.isdir(self.pins.tunnel_dir):
            for entry in os.listdir(self.pins.tunnel_dir):
                loader.detach_at(os.path.join(self.pins.tunnel_dir, entry), int(entry[4:]))
            os.rmdir(self.pins.tunnel_dir)
        if config.ifindex:
            with contextlib.suppress(OSError):
                tunnel.delete(socket.if_indextoname(config.ifindex))

    def destroy(self) -> None:
        """Remove every link, the tunnel and the node-wide pins under the root, then close."""
        with self._locked():
            for name in self.links():
                self._teardown(name, self._link_id(name))
            self._remove_interface_attachments()
            self._remove_tunnel()
            loader.unpin_node(self.pins)
            with contextlib.suppress(OSError):
                for entry in os.listdir(self.pins.link_ids_dir):  # of half-created links
                    os.rmdir(self.pins.link_id_marker(int(entry)))
                os.rmdir(self.pins.link_ids_dir)
            with contextlib.suppress(OSError):
                for entry in os.listdir(self.pins.links_dir):  # half-created folders
                    os.rmdir(self.pins.link_dir(entry))
                os.rmdir(self.pins.links_dir)
        self.close()
        with contextlib.suppress(OSError):
            os.rmdir(self.root)
