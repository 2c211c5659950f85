/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Maglev selection of the endpoint for a new flow.
 *
 * Each (link, side) has a lookup table of SFC_MAGLEV_SIZE slots, each naming the slot of an
 * active endpoint; user space (sfc_k8s.dataplane.maglev) builds it. The table map holds two
 * copies: user space rewrites the idle one and then flips the control entry to it, so the
 * program uses either the old table or the new one, never half of each.
 */
#pragma once

#include "common.h"
#include "drop_reasons.h"
#include "flow_key.h"
#include "hash.h"
#include "ifaces.h"

/* One entry of a table: the endpoint slot in each of the two copies of the table. User space
 * rewrites the copy the program is not using, then flips the control entry (index
 * SFC_MAGLEV_SIZE), so a change costs no map swap (whose update waits for an RCU grace period,
 * 10-15 ms) and the program reads a whole old table or a whole new one.
 */
struct sfc_maglev_entry {
	__u32 slot[2];		/* endpoint slot (0: none) in copy 0 and copy 1 */
};

/* The control entry's slot[0]: the copy in use, or SFC_MAGLEV_EMPTY (no active endpoint). */
#define SFC_MAGLEV_EMPTY 2

/* Template of the per-(link, side) tables that user space creates. Memory-mappable, so user
 * space writes a table with one copy instead of 65,537 element updates.
 */
struct sfc_maglev_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, SFC_MAGLEV_SIZE + 1);
	/* Sizes, not BTF types: clang emits only a forward declaration of a struct this deep. */
	__uint(key_size, sizeof(__u32));	/* Maglev slot; SFC_MAGLEV_SIZE: control */
	__uint(value_size, sizeof(struct sfc_maglev_entry));
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

/* The Maglev hash of flow @key in the link whose cluster-wide id is @link_cid: the key's
 * words with the node-local link id replaced by the cluster-wide one, so that every node
 * hashes a flow alike (mirrored by sfc_k8s.dataplane.flow.flow_hash).
 */
static __always_inline __u32 sfc_maglev_hash(const struct sfc_flow_key *key, __u32 link_cid)
{
	struct sfc_flow_key hashed = *key;

	hashed.link_id = link_cid;
	return sfc_hash_words((const __u32 *)&hashed, sizeof(hashed) / 4);
}

/* Pick the endpoint on @side for the new flow @key of the link whose cluster-wide id is
 * @link_cid: the endpoint (local or remote), its slot in @slot. NULL with the drop reason in
 * @reason when there is none.
 */
static __always_inline const struct sfc_endpoint *
sfc_maglev_select(const struct sfc_flow_key *key, __u32 link_cid, __u32 side, __u32 *slot,
		  __u32 *reason)
{
	__u32 mkey = sfc_maglev_key(key->link_id, side);
	const struct sfc_endpoint *e;
	__u32 index, chosen, copy, ctl_index = SFC_MAGLEV_SIZE;
	const struct sfc_maglev_entry *ctl, *entry;
	struct sfc_maglev_entry control;
	void *table;

	*reason = SFC_DROP_NO_ENDPOINT;
	table = bpf_map_lookup_elem(&sfc_maglev_v3, &mkey);
	if (!table)
		return NULL;
	ctl = bpf_map_lookup_elem(table, &ctl_index);
	if (!ctl)
		return NULL;
	control = *ctl;
	copy = control.slot[0];
	if (copy >= SFC_MAGLEV_EMPTY)
		return NULL;
	index = sfc_maglev_hash(key, link_cid) % SFC_MAGLEV_SIZE;
	entry = bpf_map_lookup_elem(table, &index);
	if (!entry)
		return NULL;
	chosen = copy ? entry->slot[1] : entry->slot[0];
	if (!chosen)
		return NULL;
	/* A table is rewritten after the endpoints change; never trust it across links. */
	*reason = SFC_DROP_STALE_ENDPOINT;
	e = sfc_ep_at(chosen);
	if (!e || !e->gen || e->link_id != key->link_id || e->side != side)
		return NULL;
	*slot = chosen;
	return e;
}
