/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Flow cache: a small per-CPU, direct-mapped copy of the sessions of recent IPv4 L4 flows, in
 * front of the session table.
 *
 * Why: a hit in the LRU session table is a call into the kernel's hash map code (a jhash and
 * a memcmp behind two calls and their returns), and on a kernel with return-thunk mitigations
 * calls are what a packet pays most for. An array lookup is inlined by the verifier: with the
 * cache, the packets of an established flow are forwarded with no call at all besides the
 * redirect.
 *
 * The session table stays the authority (it is what user space lists, counts and purges): an
 * entry is filled from it, by a packet that found its flow there (so a new flow's second
 * packet), and is only trusted while:
 *   - its key is the packet's key, word for word;
 *   - the packet comes from the near-side endpoint the entry records (else the table is asked,
 *     which moves the session's near end as it always did);
 *   - the far-side endpoint is still the one recorded (same generation stamp, see ifaces.h),
 *     so removing an endpoint invalidates the entries that name it without touching them;
 *   - it has served fewer than SFC_FLOW_CACHE_REFRESH packets since it was filled: every
 *     SFC_FLOW_CACHE_REFRESH-th packet of a flow goes to the table, which keeps the flow
 *     recently used in the table's LRU order and picks up any change made there.
 * Per CPU, so an entry is only ever written by the CPU that reads it: the program runs in
 * softirq context (or with bottom halves disabled), where it cannot interrupt itself.
 * Memory: SFC_FLOW_CACHE_SIZE entries of 40 bytes per possible CPU (320 KiB each).
 */
#pragma once

#include "common.h"
#include "flow_key.h"
#include "ifaces.h"
#include "sessions.h"

/* Entries per CPU (a power of two); the index is the top SFC_FLOW_CACHE_BITS of the hash. */
#define SFC_FLOW_CACHE_BITS 13
#define SFC_FLOW_CACHE_SIZE (1U << SFC_FLOW_CACHE_BITS)
/* Every this many packets (a power of two) an entry is checked against the session table. */
#define SFC_FLOW_CACHE_REFRESH 64

struct sfc_flow_cache_entry {
	struct sfc_flow_key4 key;	/* link_id 0 (no link) marks an empty entry */
	__u32 hits;			/* packets served since the entry was filled */
	struct sfc_session session;	/* copy of the table's session */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SFC_FLOW_CACHE_SIZE);
	__type(key, __u32);		/* sfc_flow_cache_index() of the key */
	__type(value, struct sfc_flow_cache_entry);
} sfc_flowcache_v1 SEC(".maps");

/* Multiplicative hashing of the key's words; mirrored by sfc_k8s.dataplane.flow. */
static __always_inline __u32 sfc_flow_cache_index(const struct sfc_flow_key4 *k4)
{
	const __u32 *w = (const __u32 *)k4;
	__u64 h = (((__u64)w[0] << 32) | w[1]) * 0x9e3779b97f4a7c15ULL ^
		  (((__u64)w[2] << 32) | w[3]) * 0xc2b2ae3d27d4eb4fULL ^
		  (__u64)w[4] * 0x165667b19e3779f9ULL;

	return h >> (64 - SFC_FLOW_CACHE_BITS);
}

/* This CPU's cache entry for @k4 (whichever flow it holds now). */
static __always_inline struct sfc_flow_cache_entry *
sfc_flow_cache_entry(const struct sfc_flow_key4 *k4)
{
	__u32 index = sfc_flow_cache_index(k4);

	return bpf_map_lookup_elem(&sfc_flowcache_v1, &index);
}

/* The far-side interface entry @e gives a packet of flow @k4 from near-side endpoint
 * (@in_slot, @in_gen), its slot in @far_slot; 0 to ask the session table (see above).
 */
static __always_inline __u32 sfc_flow_cache_follow(struct sfc_flow_cache_entry *e,
						   const struct sfc_flow_key4 *k4, __u32 link_id,
						   __u32 near, __u32 in_slot, __u32 in_gen,
						   __u32 *far_slot)
{
	const __u32 *a, *b = (const __u32 *)k4;
	__u32 far = near ^ 1;

	if (!e)
		return 0;
	a = (const __u32 *)&e->key;
	if (a[0] != b[0] || a[1] != b[1] || a[2] != b[2] || a[3] != b[3] || a[4] != b[4])
		return 0;
	if ((++e->hits & (SFC_FLOW_CACHE_REFRESH - 1)) == 0)
		return 0;
	if (e->session.slot[near] != in_slot || e->session.gen[near] != in_gen)
		return 0;
	*far_slot = e->session.slot[far];
	return sfc_ep_ifindex(*far_slot, link_id, far, e->session.gen[far]);
}

/* Make @e hold session @s of flow @k4 (a NULL @e is tolerated). */
static __always_inline void sfc_flow_cache_fill(struct sfc_flow_cache_entry *e,
						const struct sfc_flow_key4 *k4,
						const struct sfc_session *s)
{
	if (!e)
		return;
	e->key = *k4;
	e->hits = 0;
	e->session = *s;
}
