"""The BPF test harness: one Dataplane under a private bpffs root, real veths as endpoints,
and ``run(ifname, frame)`` through BPF_PROG_TEST_RUN with the ingress interface set.

The frame enters as if it came in on ``ifname``; the result carries the verdict, and the
endpoint the packet went to is read back from the tx counters (a redirect into a pod is
not carried out by the test run, only decided).
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from sfc_k8s.dataplane import Dataplane, DropReason, Side, flow, maglev, maps, structs
from sfc_k8s.dataplane import _libbpf as bpf
from sfc_k8s.dataplane.structs import FlowKey, SessionValue

TC_ACT_OK = 0
TC_ACT_UNSPEC = -1  # "next program, or pass": what an interface in no link gets
TC_ACT_SHOT = 2
TC_ACT_REDIRECT = 7
SKB_IFINDEX_OFFSET = 40  # offsetof(struct __sk_buff, ifindex)


@dataclass(frozen=True)
class Verdict:
    retval: int
    target: str | None  # interface whose tx counter moved (the redirect target)


class Harness:
    def __init__(self, dp: Dataplane) -> None:
        self.dp = dp

    def ifindex(self, ifname: str) -> int:
        return socket.if_nametoindex(ifname)

    def slots(self) -> dict[int, structs.EndpointEntry]:
        """slot -> endpoint, for the endpoints the interface index map leads to."""
        index = self.dp.map_fd(structs.MAP_IFSLOTS)
        array = self.dp.map_fd(structs.MAP_ENDPOINTS)
        result = {}
        for _, slot in maps.walk(index, ctypes.c_uint32, ctypes.c_uint32):
            entry = maps.lookup(array, slot, structs.EndpointEntry)
            assert entry is not None
            result[slot.value] = entry
        return result

    def slot(self, ifname: str) -> int:
        return next(s for s, e in self.slots().items() if e.ifindex == self.ifindex(ifname))

    def tx_counts(self) -> dict[int, int]:
        """Packets redirected into each endpoint, by ifindex."""
        fd = self.dp.map_fd(structs.MAP_EP_COUNTERS)
        counts = {}
        for slot, e in self.slots().items():
            per_cpu = maps.percpu(fd, ctypes.c_uint32(slot), structs.EpCounters) or []
            counts[e.ifindex] = sum(c.tx_packets for c in per_cpu)
        return counts

    def run(self, ifname: str, frame: bytes) -> Verdict:
        before = self.tx_counts()
        ctx = bytearray(SKB_IFINDEX_OFFSET + 4)
        struct.pack_into("<I", ctx, SKB_IFINDEX_OFFSET, self.ifindex(ifname))
        result = bpf.prog_test_run(self.dp.program_fd, frame, ctx=bytes(ctx))
        after = self.tx_counts()
        moved = [i for i, n in after.items() if n != before.get(i, 0)]
        assert len(moved) <= 1, f"one packet counted on several endpoints: {moved}"
        target = socket.if_indextoname(moved[0]) if moved else None
        return Verdict(result.retval, target)

    def drops(self, link: str) -> dict[DropReason, int]:
        return self.dp.status(link).drops

    def session(self, key: FlowKey) -> SessionValue | None:
        name, map_key = structs.session_key(key)
        return maps.lookup(self.dp.map_fd(name), map_key, SessionValue)

    def put_session(self, key: FlowKey, value: SessionValue) -> None:
        """Write a session into its table, and empty the flow cache so that the next packet
        reads the table."""
        name, map_key = structs.session_key(key)
        bpf.map_update(self.dp.map_fd(name), map_key, value)
        self.clear_flow_cache()

    def clear_flow_cache(self) -> None:
        for name, entry in structs.FLOW_CACHES.items():
            maps.percpu_zero_all(self.dp.map_fd(name), structs.FLOW_CACHE_SIZE, entry)

    def session_entries(self) -> list[tuple[FlowKey, SessionValue]]:
        """Every session of both tables, IPv4 L4 keys given in their full form."""
        fd4 = self.dp.map_fd(structs.MAP_SESSIONS4)
        entries = [(k.flow_key(), v) for k, v in maps.walk(fd4, structs.FlowKey4, SessionValue)]
        fd = self.dp.map_fd(structs.MAP_SESSIONS)
        return entries + list(maps.walk(fd, FlowKey, SessionValue))

    def session_names(self, key: FlowKey) -> tuple[str, str] | None:
        value = self.session(key)
        if value is None:
            return None
        slots = self.slots()
        a, b = slots[value.slot[0]], slots[value.slot[1]]
        return socket.if_indextoname(a.ifindex), socket.if_indextoname(b.ifindex)

    def clear_sessions(self) -> None:
        """Forget every session, as a node does when it reboots: the tables and the flow cache."""
        self.clear_flow_cache()
        fd = self.dp.map_fd(structs.MAP_SESSIONS)
        maps.delete_all(fd, [k for k, _ in maps.walk(fd, FlowKey, SessionValue)])
        fd4 = self.dp.map_fd(structs.MAP_SESSIONS4)
        maps.delete_all(fd4, [k for k, _ in maps.walk(fd4, structs.FlowKey4, SessionValue)])

    def predict(self, key: FlowKey, endpoints: Sequence[str]) -> str:
        """The endpoint Maglev gives a new flow, computed in Python from the endpoints'
        stable ids and their link's cluster id."""
        by_ifindex = {e.ifindex: e for e in self.slots().values()}
        entries = [by_ifindex[self.ifindex(name)] for name in endpoints]
        cid = entries[0].link_cid
        table = maglev.build_table(
            {maglev.endpoint_name(e.link_cid, e.id): i for i, e in enumerate(entries)}
        )
        return endpoints[table[flow.flow_hash(key, link_cid=cid) % structs.MAGLEV_SIZE]]

    def link_id(self, link: str) -> int:
        return self.dp.status(link).link_id

    def active(self, link: str, side: Side) -> list[str]:
        return [e.ifname for e in self.dp.status(link).side(side) if e.state.value == "active"]
