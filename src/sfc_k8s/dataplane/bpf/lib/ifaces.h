/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Endpoints: which link and side each participating interface belongs to, and the endpoints
 * of the same links that live on other nodes.
 *
 * An endpoint lives in a slot of the sfc_endpts_v2 array (slot 0 is never used, so 0 means
 * "none"). It is local (a host interface of this node, ifindex set) or remote (on the node
 * whose underlay address is in node; reached through the tunnel, see tunnel.h). Every
 * endpoint carries a stable id within its link, the same on every node, and its link's
 * cluster-wide id: Maglev tables and the flow hash are built from those (never from slots,
 * ifindexes or node-local link ids), so every node makes the same choice for a flow.
 *
 * sfc_ifslots_v1 finds the slot of an ingress interface (local endpoints only), sfc_epids_v1
 * the slot of (link, stable id) (every endpoint: the tunnel's receive path and user space use
 * it). Sessions, Maglev tables and counters all refer to slots, so everything after the
 * ingress lookup is an array access the verifier inlines. User space writes the slot before
 * the indexes on add, and removes the indexes before clearing the slot on removal.
 *
 * sfc_ifcache_v1 spares the hash lookup on the fast path: an array indexed by the low bits of
 * the ifindex, holding the slot of one endpoint with those bits (user space fills it when the
 * entry is free). The slot's endpoint must carry the very ifindex, so a stale or colliding
 * entry only sends the lookup on to the hash index, which stays the authority.
 */
#pragma once

#include "common.h"

struct sfc_endpoint {
	__u32 ifindex;			/* local: host interface; 0 for a remote endpoint */
	__u32 gen;			/* random odd stamp set when added, 0 in a free slot */
	__u32 link_id;			/* node-local id of the link the endpoint belongs to */
	__u8 side;			/* enum sfc_side */
	__u8 state;			/* enum sfc_ep_state */
	__u16 id;			/* stable id within the link (1..SFC_MAX_EP_ID), cluster-wide */
	__u32 link_cid;			/* cluster-wide id of the link */
	__be32 node;			/* remote: underlay IPv4 address of its node; 0: local */
	char ifname[SFC_IFNAMSIZ];	/* local: interface name when added, for people */
};

/* Key of sfc_epids_v1. */
struct sfc_ep_ref {
	__u32 link_id;			/* node-local link id */
	__u32 id;			/* stable endpoint id within the link */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SFC_MAX_IFACES);
	__type(key, __u32);		/* slot */
	__type(value, struct sfc_endpoint);
} sfc_endpts_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SFC_MAX_IFACES);
	__type(key, __u32);		/* ifindex */
	__type(value, __u32);		/* slot in sfc_endpts_v2 */
} sfc_ifslots_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SFC_MAX_IFACES);
	__type(key, struct sfc_ep_ref);
	__type(value, __u32);		/* slot in sfc_endpts_v2 */
} sfc_epids_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SFC_IFCACHE_SIZE);
	__type(key, __u32);		/* ifindex & (SFC_IFCACHE_SIZE - 1) */
	__type(value, __u32);		/* slot in sfc_endpts_v2, 0: none */
} sfc_ifcache_v1 SEC(".maps");

/* The endpoint of ingress interface @ifindex, or NULL when it is in no link. */
static __always_inline const struct sfc_endpoint *sfc_ep_of_iface(__u32 ifindex, __u32 *slot)
{
	__u32 index = ifindex & (SFC_IFCACHE_SIZE - 1);
	const struct sfc_endpoint *e;
	__u32 *s;

	s = bpf_map_lookup_elem(&sfc_ifcache_v1, &index);
	if (s && *s) {
		e = bpf_map_lookup_elem(&sfc_endpts_v2, s);
		if (e && e->ifindex == ifindex) {
			*slot = *s;
			return e;
		}
	}
	s = bpf_map_lookup_elem(&sfc_ifslots_v1, &ifindex);
	if (!s)
		return NULL;
	*slot = *s;
	e = bpf_map_lookup_elem(&sfc_endpts_v2, s);
	if (!e || e->ifindex != ifindex)
		return NULL;
	return e;
}

static __always_inline const struct sfc_endpoint *sfc_ep_at(__u32 slot)
{
	return bpf_map_lookup_elem(&sfc_endpts_v2, &slot);
}

/* The endpoint with stable @id in link @link_id (its slot in @slot), or NULL. */
static __always_inline const struct sfc_endpoint *sfc_ep_by_id(__u32 link_id, __u32 id,
							       __u32 *slot)
{
	struct sfc_ep_ref ref = { .link_id = link_id, .id = id };
	const struct sfc_endpoint *e;
	__u32 *s;

	s = bpf_map_lookup_elem(&sfc_epids_v1, &ref);
	if (!s)
		return NULL;
	e = sfc_ep_at(*s);
	if (!e || !e->gen || e->link_id != link_id || e->id != id)
		return NULL;
	*slot = *s;
	return e;
}

/* The endpoint in @slot if it is still the one a session or table recorded: same link, same
 * side, same generation (a removed endpoint's slot is cleared, a reused slot gets a new
 * generation). NULL otherwise.
 */
static __always_inline const struct sfc_endpoint *sfc_ep_valid(__u32 slot, __u32 link_id,
								__u32 side, __u32 gen)
{
	const struct sfc_endpoint *e = sfc_ep_at(slot);

	if (!e || e->gen != gen || e->link_id != link_id || e->side != side)
		return NULL;
	return e;
}
