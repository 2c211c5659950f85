"""C and Python cannot drift: the ctypes mirrors match the compiled object's BTF (size, field
names and offsets), the maps in the kernel have the mirrored key/value sizes and capacities,
and the constants and enums of the C headers match their Python mirrors. A live Maglev table
(created by user space from the object's template) has the mirrored entry size, its two copies
plus the control entry, and is memory-mappable.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sfc_k8s.dataplane import DropReason, flow, loader, maps, structs
from sfc_k8s.dataplane import _libbpf as bpf
from tests.bpf.conftest import SESSIONS, Topology

LIB = Path(structs.__file__).parent / "bpf" / "lib"


def btf_structs() -> dict[str, dict[str, object]]:
    out = subprocess.run(
        ["bpftool", "-j", "btf", "dump", "file", str(loader.OBJECT_PATH)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {t["name"]: t for t in json.loads(out)["types"] if t["kind"] == "STRUCT"}


@pytest.mark.parametrize("c_name", sorted(structs.MIRRORS))
def test_struct_mirrors_match_btf(c_name: str) -> None:
    btf = btf_structs()[c_name]
    mirror = structs.MIRRORS[c_name]
    assert ctypes.sizeof(mirror) == btf["size"]
    c_fields = [(m["name"], m["bits_offset"] // 8) for m in btf["members"]]  # type: ignore[attr-defined]
    py_fields = [(name, getattr(mirror, name).offset) for name, *_ in mirror._fields_]
    assert py_fields == c_fields


def _btf_name(types: dict[int, dict[str, Any]], type_id: int) -> str:
    """A BTF type as C spells it (``struct sfc_session``, ``__u32``), through pointers."""
    t = types[type_id]
    if t["kind"] == "PTR":
        return _btf_name(types, t["type_id"])
    return f"struct {t['name']}" if t["kind"] == "STRUCT" else t["name"]


@pytest.mark.parametrize("name", sorted(set(structs.NODE_MAPS) - {structs.MAP_MAGLEV}))
def test_map_value_types_name_the_objects_value_type(name: str) -> None:
    """The value type the upgrade's messages name for each map is the one the object declares
    (the Maglev outer map's values are inner maps, described in words)."""
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(loader.OBJECT_PATH)],
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    types = {t["id"]: t for t in json.loads(out)["types"]}
    (var,) = [t for t in types.values() if t["kind"] == "VAR" and t["name"] == name]
    members = {m["name"]: m["type_id"] for m in types[var["type_id"]]["members"]}
    assert _btf_name(types, members["value"]) == structs.MAP_VALUE_TYPES[name]


def c_defines(header: str) -> dict[str, int]:
    text = (LIB / header).read_text()
    return {
        m[1]: int(m[2], 0) for m in re.finditer(r"#define SFC_(\w+) (0x[0-9a-fA-F]+|\d+)U?", text)
    }


def c_enum(header: str, prefix: str) -> dict[str, int]:
    text = (LIB / header).read_text()
    return {m[1]: int(m[2]) for m in re.finditer(rf"\b{prefix}(\w+) = (\d+)", text)}


def test_capacities_match_common_h() -> None:
    d = c_defines("common.h")
    assert d["MAX_LINKS"] == structs.MAX_LINKS
    assert d["MAX_IFACES"] == structs.MAX_IFACES
    assert d["MAX_ENDPOINTS_PER_SIDE"] == structs.MAX_ENDPOINTS_PER_SIDE
    assert d["MAX_EP_ID"] == structs.MAX_EP_ID
    assert d["MAX_CLUSTER_LINKS"] == structs.MAX_CLUSTER_LINKS
    assert d["IFCACHE_SIZE"] == structs.IFCACHE_SIZE
    assert d["MAGLEV_SIZE"] == structs.MAGLEV_SIZE
    assert d["SESSIONS_DEFAULT"] == structs.SESSIONS_DEFAULT
    assert d["DROP_MAX"] == structs.DROP_MAX
    assert d["IFNAMSIZ"] == structs.IFNAMSIZ
    assert c_defines("hash.h")["HASH_SEED"] == flow.HASH_SEED
    tun = c_defines("tunnel.h")
    assert tun["TUNNEL_ID_BITS"] == structs.TUNNEL_ID_BITS
    assert tun["TUNNEL_GBP_MASK"] == structs.TUNNEL_GBP_MASK
    assert structs.MAX_EP_ID == (1 << structs.TUNNEL_ID_BITS) - 1
    assert structs.MAX_CLUSTER_LINKS - 1 == structs.TUNNEL_GBP_MASK
    cache = c_defines("flow_cache.h")
    assert cache["FLOW_CACHE_BITS"] == structs.FLOW_CACHE_BITS
    assert cache["FLOW_CACHE_REFRESH"] == structs.FLOW_CACHE_REFRESH


def test_drop_reasons_mirror_the_header() -> None:
    assert c_enum("drop_reasons.h", "SFC_DROP_") == {r.name: r.value for r in DropReason}
    assert max(DropReason) < structs.DROP_MAX


def test_flow_kinds_mirror_the_header() -> None:
    assert c_enum("flow_key.h", "SFC_FLOW_") == {k.name: k.value for k in structs.FlowKind}


def test_pinned_maps_have_the_mirrored_layout(topo: Topology) -> None:
    entries = {
        structs.MAP_ENDPOINTS: structs.MAX_IFACES,
        structs.MAP_IFSLOTS: structs.MAX_IFACES,
        structs.MAP_EPIDS: structs.MAX_IFACES,
        structs.MAP_IFCACHE: structs.IFCACHE_SIZE,
        structs.MAP_SESSIONS: SESSIONS,
        structs.MAP_SESSIONS4: SESSIONS,
        structs.MAP_FLOW_CACHE4: structs.FLOW_CACHE_SIZE,
        structs.MAP_FLOW_CACHE: structs.FLOW_CACHE_SIZE,
        structs.MAP_MAGLEV: 2 * structs.MAX_LINKS,
        structs.MAP_EP_COUNTERS: structs.MAX_IFACES,
        structs.MAP_LINK_STATS: structs.MAX_LINKS,
        structs.MAP_TUNNEL: 1,
        structs.MAP_CLINKS: structs.MAX_CLUSTER_LINKS,
        structs.MAP_NODES: structs.MAX_IFACES,
    }
    assert set(entries) == set(structs.NODE_MAPS) == set(structs.MAP_LAYOUTS)
    for name, count in entries.items():
        info = bpf.map_info(topo.h.dp.map_fd(name))
        assert info.name.decode() == name[: bpf.BPF_OBJ_NAME_LEN - 1]
        assert (info.key_size, info.value_size) == structs.MAP_LAYOUTS[name], name
        assert info.max_entries == count, name


def test_maglev_tables_have_the_mirrored_layout(topo: Topology) -> None:
    outer = topo.h.dp.map_fd(structs.MAP_MAGLEV)
    link_id = topo.h.link_id("main")
    assert c_defines("maglev.h")["MAGLEV_EMPTY"] == structs.MAGLEV_EMPTY
    for side in (structs.SIDE_A, structs.SIDE_B):
        table_id = maps.lookup(outer, ctypes.c_uint32(link_id << 1 | side), ctypes.c_uint32)
        assert table_id is not None
        fd = bpf.map_fd_by_id(table_id.value)
        try:
            info = bpf.map_info(fd)
        finally:
            os.close(fd)
        assert info.name.decode() == structs.MAGLEV_TABLE_MAP
        assert (info.key_size, info.value_size) == (4, ctypes.sizeof(structs.MaglevEntry))
        assert info.max_entries == structs.MAGLEV_SIZE + 1
        assert info.map_flags & bpf.BPF_F_MMAPABLE
