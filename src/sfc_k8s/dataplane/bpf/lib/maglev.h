/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Maglev selection of the endpoint for a new flow.
 *
 * Each (link, side) has a lookup table of SFC_MAGLEV_SIZE slots, each holding the ifindex of
 * an active endpoint's slot; user space (sfc_k8s.dataplane.maglev) builds it and swaps a whole new
 * table in at once through the outer hash-of-maps, so the program never sees half a table.
 */
#pragma once

#include "common.h"
#include "drop_reasons.h"
#include "flow_key.h"
#include "hash.h"
#include "ifaces.h"

/* Template of the per-(link, side) tables that user space creates. Memory-mappable, so user
 * space writes a new table with one copy instead of 65,537 element updates.
 */
struct sfc_maglev_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, SFC_MAGLEV_SIZE);
	__type(key, __u32);		/* Maglev slot */
	__type(value, __u32);		/* endpoint slot of an active endpoint */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, SFC_MAX_LINKS * 2);
	__type(key, __u32);		/* link_id << 1 | side */
	__array(values, struct sfc_maglev_table);
} sfc_maglev_v3 SEC(".maps");

static __always_inline __u32 sfc_maglev_key(__u32 link_id, __u32 side)
{
	return link_id << 1 | side;
}

/* Pick the endpoint on @side for the new flow @key: its ifindex, slot and generation.
 * 0 or minus a drop reason.
 */
static __always_inline int sfc_maglev_select(const struct sfc_flow_key *key, __u32 side,
					     __u32 *ifindex, __u32 *slot, __u32 *gen)
{
	__u32 mkey = sfc_maglev_key(key->link_id, side);
	const struct sfc_endpoint *e;
	__u32 index, *chosen;
	void *table;

	table = bpf_map_lookup_elem(&sfc_maglev_v3, &mkey);
	if (!table)
		return -SFC_DROP_NO_ENDPOINT;
	index = sfc_hash_words((const __u32 *)key, sizeof(*key) / 4) % SFC_MAGLEV_SIZE;
	chosen = bpf_map_lookup_elem(table, &index);
	if (!chosen || !*chosen)
		return -SFC_DROP_NO_ENDPOINT;
	/* A table is replaced after the endpoints change; never trust it across links. */
	e = sfc_ep_at(*chosen);
	if (!e || !e->ifindex || e->link_id != key->link_id || e->side != side)
		return -SFC_DROP_STALE_ENDPOINT;
	*ifindex = e->ifindex;
	*slot = *chosen;
	*gen = e->gen;
	return 0;
}
