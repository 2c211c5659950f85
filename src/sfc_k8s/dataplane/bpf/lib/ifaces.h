/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Interface -> (link, side) map: the program's only way to know what a packet belongs to. */
#pragma once

#include "common.h"

/* One participating host interface (the host end of an NF replica's veth). */
struct sfc_iface {
	__u32 link_id;			/* link the interface belongs to */
	__u32 gen;			/* random stamp set when added; sessions copy it */
	__u8 side;			/* enum sfc_side */
	__u8 state;			/* enum sfc_ep_state */
	__u16 pad;			/* zero */
	char ifname[SFC_IFNAMSIZ];	/* interface name when added, for people */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SFC_MAX_IFACES);
	__type(key, __u32);		/* ifindex */
	__type(value, struct sfc_iface);
} sfc_ifaces_v1 SEC(".maps");

static __always_inline const struct sfc_iface *sfc_iface_lookup(__u32 ifindex)
{
	return bpf_map_lookup_elem(&sfc_ifaces_v1, &ifindex);
}

/* True when @ifindex is still the endpoint a session or table recorded: same link, same side,
 * same generation (an interface removed and added again, or a reused ifindex, gets a new one).
 */
static __always_inline int sfc_iface_matches(__u32 ifindex, __u32 link_id, __u32 side, __u32 gen)
{
	const struct sfc_iface *e = sfc_iface_lookup(ifindex);

	return e && e->link_id == link_id && e->side == side && e->gen == gen;
}
