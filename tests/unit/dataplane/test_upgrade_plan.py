"""The upgrade's map plan (``upgrade.plan_maps``), a pure function: which pinned map a new
build reuses, rebuilds or copies, and which changes it refuses, with the message it gives."""

from __future__ import annotations

from sfc_k8s.dataplane import structs
from sfc_k8s.dataplane.upgrade import MapAction, MapSpec, plan_maps

HASH, ARRAY, LRU, PERCPU_ARRAY = 1, 2, 9, 6


def _specs() -> dict[str, MapSpec]:
    """The node-wide maps as the shipped layout has them (types do not matter here)."""
    return {
        name: MapSpec(HASH, key, value, 1024, 0)
        for name, (key, value) in structs.MAP_LAYOUTS.items()
    }


def test_the_same_layout_reuses_every_map() -> None:
    plan = plan_maps(_specs(), _specs())
    assert plan.refusals == [] and plan.stale == []
    assert set(plan.actions.values()) == {MapAction.REUSE}


def test_a_cache_of_another_layout_is_rebuilt_and_a_grown_user_map_copied() -> None:
    wanted = _specs()
    cache = wanted[structs.MAP_FLOW_CACHE4]
    wanted[structs.MAP_FLOW_CACHE4] = MapSpec(PERCPU_ARRAY, 4, cache.value_size, 9999, 0)
    wanted[structs.MAP_NODES] = MapSpec(HASH, 4, 4, 2048, 0)
    plan = plan_maps(_specs(), wanted)
    assert plan.refusals == []
    assert plan.actions[structs.MAP_FLOW_CACHE4] == MapAction.FRESH
    assert plan.actions[structs.MAP_NODES] == MapAction.COPY
    assert plan.actions[structs.MAP_ENDPOINTS] == MapAction.REUSE


def test_a_user_map_that_shrinks_or_changes_its_value_is_refused() -> None:
    wanted = _specs()
    wanted[structs.MAP_NODES] = MapSpec(HASH, 4, 4, 512, 0)
    wanted[structs.MAP_CLINKS] = MapSpec(HASH, 4, 8, 1024, 0)
    plan = plan_maps(_specs(), wanted)
    assert plan.refusals == [
        "sfc_clinks_v1 (__u32): value size 4 -> 8: only a larger capacity can be migrated for it",
        "sfc_nodes_v1 (__u32): capacity 1024 -> 512: only a larger capacity can be migrated for it",
    ]


def test_a_session_table_change_is_refused_with_the_map_and_the_difference() -> None:
    wanted = _specs()
    key = wanted[structs.MAP_SESSIONS4].key_size
    wanted[structs.MAP_SESSIONS4] = MapSpec(LRU, key, 20, 1024, 0)
    (refusal,) = plan_maps(_specs(), wanted).refusals
    assert refusal.startswith("sfc_sess4_v1 (struct sfc_session): map type 1 -> 9, value size")
    assert "live sessions cannot be converted" in refusal


def test_a_renamed_map_is_refused_and_a_new_one_created() -> None:
    pinned = _specs()
    pinned["sfc_endpts_v1"] = pinned.pop(structs.MAP_ENDPOINTS)
    del pinned[structs.MAP_NODES]  # a map the old build did not have
    plan = plan_maps(pinned, _specs())
    assert plan.refusals == [
        "sfc_endpts_v2: the pinned state has sfc_endpts_v1 instead, and no conversion between"
        " the two layouts is known"
    ]
    assert plan.actions[structs.MAP_NODES] == MapAction.FRESH
    assert plan.stale == ["sfc_endpts_v1"]


def test_an_object_that_does_not_match_this_agents_structs_is_refused() -> None:
    wanted = _specs()
    pinned = _specs()
    pinned[structs.MAP_TUNNEL] = wanted[structs.MAP_TUNNEL] = MapSpec(ARRAY, 4, 12, 1, 0)
    (refusal,) = plan_maps(pinned, wanted).refusals
    assert refusal.startswith("sfc_tunnel_v1: the object's key/value sizes 4/12 are not this")
