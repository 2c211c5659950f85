/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Endpoints: which link and side each participating interface belongs to.
 *
 * An endpoint lives in a slot of the sfc_endpts_v1 array (slot 0 is never used, so 0 means
 * "none"); sfc_ifslots_v1 finds the slot of an ingress interface. Sessions, Maglev tables and
 * counters all refer to slots, so everything after the ingress lookup is an array access the
 * verifier inlines. User space writes the slot before the index on add, and removes the index
 * before clearing the slot on removal.
 *
 * sfc_ifcache_v1 spares the hash lookup on the fast path: an array indexed by the low bits of
 * the ifindex, holding the slot of one endpoint with those bits (user space fills it when the
 * entry is free). The slot's endpoint must carry the very ifindex, so a stale or colliding
 * entry only sends the lookup on to the hash index, which stays the authority.
 */
#pragma once

#include "common.h"

struct sfc_endpoint {
	__u32 ifindex;			/* host interface; 0 marks a free slot */
	__u32 gen;			/* random odd stamp set when added; sessions copy it */
	__u32 link_id;			/* link the endpoint belongs to */
	__u8 side;			/* enum sfc_side */
	__u8 state;			/* enum sfc_ep_state */
	__u16 pad;			/* zero */
	char ifname[SFC_IFNAMSIZ];	/* interface name when added, for people */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SFC_MAX_IFACES);
	__type(key, __u32);		/* slot */
	__type(value, struct sfc_endpoint);
} sfc_endpts_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SFC_MAX_IFACES);
	__type(key, __u32);		/* ifindex */
	__type(value, __u32);		/* slot in sfc_endpts_v1 */
} sfc_ifslots_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SFC_IFCACHE_SIZE);
	__type(key, __u32);		/* ifindex & (SFC_IFCACHE_SIZE - 1) */
	__type(value, __u32);		/* slot in sfc_endpts_v1, 0: none */
} sfc_ifcache_v1 SEC(".maps");

/* The endpoint of ingress interface @ifindex, or NULL when it is in no link. */
static __always_inline const struct sfc_endpoint *sfc_ep_of_iface(__u32 ifindex, __u32 *slot)
{
	__u32 index = ifindex & (SFC_IFCACHE_SIZE - 1);
	const struct sfc_endpoint *e;
	__u32 *s;

	s = bpf_map_lookup_elem(&sfc_ifcache_v1, &index);
	if (s && *s) {
		e = bpf_map_lookup_elem(&sfc_endpts_v1, s);
		if (e && e->ifindex == ifindex) {
			*slot = *s;
			return e;
		}
	}
	s = bpf_map_lookup_elem(&sfc_ifslots_v1, &ifindex);
	if (!s)
		return NULL;
	*slot = *s;
	e = bpf_map_lookup_elem(&sfc_endpts_v1, s);
	if (!e || e->ifindex != ifindex)
		return NULL;
	return e;
}

static __always_inline const struct sfc_endpoint *sfc_ep_at(__u32 slot)
{
	return bpf_map_lookup_elem(&sfc_endpts_v1, &slot);
}

/* The interface of the endpoint in @slot if it is still the one a session or table recorded:
 * same link, same side, same generation (a removed endpoint's slot is cleared, a reused slot
 * gets a new generation). 0 otherwise.
 */
static __always_inline __u32 sfc_ep_ifindex(__u32 slot, __u32 link_id, __u32 side, __u32 gen)
{
	const struct sfc_endpoint *e = sfc_ep_at(slot);

	if (!e || e->gen != gen || e->link_id != link_id || e->side != side)
		return 0;
	return e->ifindex;
}
