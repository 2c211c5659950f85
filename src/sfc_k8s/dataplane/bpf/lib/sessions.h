/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Session table: one LRU map for the whole node, shared by every link (the link id is part of
 * the key). One entry per direction-normalised flow records the endpoint on each side, so a
 * flow and its replies cross the same pair of replicas.
 */
#pragma once

#include "common.h"
#include "flow_key.h"
#include "ifaces.h"

struct sfc_session {
	__u32 ifindex[2];	/* endpoint on side A, on side B (index enum sfc_side) */
	__u32 gen[2];		/* their generation stamps when recorded */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SFC_SESSIONS_DEFAULT);	/* user space may resize before load */
	__type(key, struct sfc_flow_key);
	__type(value, struct sfc_session);
} sfc_sessions_v1 SEC(".maps");

/* The far-side endpoint recorded for @key, or 0 when there is no session or the recorded
 * endpoint left the link (removed, or removed and added again: its generation changed).
 * A packet arriving from a different near-side endpoint than recorded moves the near end of
 * the session there, so replies follow the path the flow takes now.
 */
static __always_inline __u32 sfc_session_lookup(const struct sfc_flow_key *key, __u32 near,
					       __u32 ifindex, const struct sfc_iface *in)
{
	struct sfc_session *s = bpf_map_lookup_elem(&sfc_sessions_v1, key);
	__u32 far = near ^ 1;
	__u32 target;

	if (!s)
		return 0;
	target = s->ifindex[far];
	if (!sfc_iface_matches(target, key->link_id, far, s->gen[far]))
		return 0;
	if (s->ifindex[near] != ifindex || s->gen[near] != in->gen) {
		s->ifindex[near] = ifindex;
		s->gen[near] = in->gen;
	}
	return target;
}

static __always_inline int sfc_session_record(const struct sfc_flow_key *key, __u32 near,
					      __u32 ifindex, __u32 near_gen, __u32 target,
					      __u32 far_gen)
{
	struct sfc_session s;

	/* Branches rather than a variable index: the verifier rejects the latter on the stack. */
	if (near == SFC_SIDE_A) {
		s.ifindex[0] = ifindex;
		s.gen[0] = near_gen;
		s.ifindex[1] = target;
		s.gen[1] = far_gen;
	} else {
		s.ifindex[0] = target;
		s.gen[0] = far_gen;
		s.ifindex[1] = ifindex;
		s.gen[1] = near_gen;
	}
	return bpf_map_update_elem(&sfc_sessions_v1, key, &s, BPF_ANY);
}
