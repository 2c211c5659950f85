/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Session tables: LRU maps for the whole node, shared by every link (the link id is part of
 * the key). One entry per direction-normalised flow records the endpoint on each side, so a
 * flow and its replies cross the same pair of replicas. IPv4 TCP/UDP/UDP-Lite/SCTP flows, the
 * bulk of the traffic, live in sfc_sess4_v1 under a 20-byte key (struct sfc_flow_key4), which
 * is cheaper to hash and compare on every packet; every other flow in sfc_sessions_v2.
 */
#pragma once

#include "common.h"
#include "flow_key.h"
#include "ifaces.h"

struct sfc_session {
	__u32 slot[2];		/* endpoint slot on side A, on side B (index enum sfc_side) */
	__u32 gen[2];		/* their generation stamps when recorded */
#ifdef SFC_TEST_SESSION_PAD
	__u32 test_pad;		/* test builds only: a session layout change the upgrade refuses */
#endif
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SFC_SESSIONS_DEFAULT);	/* user space may resize before load */
	__type(key, struct sfc_flow_key);
	__type(value, struct sfc_session);
} sfc_sessions_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SFC_SESSIONS_DEFAULT);	/* user space may resize before load */
	__type(key, struct sfc_flow_key4);
	__type(value, struct sfc_session);
} sfc_sess4_v1 SEC(".maps");

/* @k4 from @key when the flow is IPv4 L4 (1), else 0 (the flow lives in sfc_sessions_v2). */
static __always_inline int sfc_session_key4(const struct sfc_flow_key *key,
					    struct sfc_flow_key4 *k4)
{
	if (key->kind != SFC_FLOW_L4_V4)
		return 0;
	k4->link_id = key->link_id;
	k4->vlan = key->vlan;
	k4->proto = key->proto;
	k4->pad = 0;
	k4->port_lo = key->port_lo;
	k4->port_hi = key->port_hi;
	k4->addr_lo = key->addr_lo[0];
	k4->addr_hi = key->addr_hi[0];
	return 1;
}

/* The session of @key (in the IPv4 table for an IPv4 L4 flow, with its compact key in @k4),
 * or NULL.
 */
static __always_inline struct sfc_session *sfc_session_find(const struct sfc_flow_key *key,
							    struct sfc_flow_key4 *k4)
{
	if (sfc_session_key4(key, k4))
		return bpf_map_lookup_elem(&sfc_sess4_v1, k4);
	return bpf_map_lookup_elem(&sfc_sessions_v2, key);
}

/* The far-side endpoint recorded in session @s (its slot in @far_slot), or NULL when the
 * recorded endpoint left the link (removed, or removed and added again). A packet arriving
 * from another near-side endpoint than recorded moves the near end of the session there, so
 * replies follow the path the flow takes now.
 */
static __always_inline const struct sfc_endpoint *
sfc_session_follow(struct sfc_session *s, __u32 link_id, __u32 near, __u32 in_slot,
		   const struct sfc_endpoint *in, __u32 *far_slot)
{
	const struct sfc_endpoint *target;
	__u32 far = near ^ 1;

	*far_slot = s->slot[far];
	target = sfc_ep_valid(*far_slot, link_id, far, s->gen[far]);
	if (target && (s->slot[near] != in_slot || s->gen[near] != in->gen)) {
		s->slot[near] = in_slot;
		s->gen[near] = in->gen;
	}
	return target;
}

/* The session of a flow entering from near-side endpoint (@in_slot, @in_gen) and sent to
 * far-side endpoint (@far_slot, @far_gen).
 */
static __always_inline void sfc_session_make(struct sfc_session *s, __u32 near, __u32 in_slot,
					     __u32 in_gen, __u32 far_slot, __u32 far_gen)
{
	/* Branches rather than a variable index: the verifier rejects the latter on the stack. */
	if (near == SFC_SIDE_A) {
		s->slot[0] = in_slot;
		s->gen[0] = in_gen;
		s->slot[1] = far_slot;
		s->gen[1] = far_gen;
	} else {
		s->slot[0] = far_slot;
		s->gen[0] = far_gen;
		s->slot[1] = in_slot;
		s->gen[1] = in_gen;
	}
}

static __always_inline int sfc_session_record(const struct sfc_flow_key *key,
					      const struct sfc_session *s)
{
	struct sfc_flow_key4 k4;

	if (sfc_session_key4(key, &k4))
		return bpf_map_update_elem(&sfc_sess4_v1, &k4, s, BPF_ANY);
	return bpf_map_update_elem(&sfc_sessions_v2, key, s, BPF_ANY);
}
