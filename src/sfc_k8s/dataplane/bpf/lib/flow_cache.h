/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Flow caches: small per-CPU, direct-mapped copies of the sessions of recent flows, in front
 * of the session tables: sfc_fcache4_v1 for IPv4 L4 flows (compact key, before
 * sfc_sess4_v1), sfc_fcache_v1 for every other flow (full key, before the table that
 * holds the flow: sfc_sessions_v2, or sfc_sess4_v1 for IPv4 L4 with options).
 *
 * Why: a hit in an LRU session table is a call into the kernel's hash map code (a jhash and
 * a memcmp behind two calls and their returns), and on a kernel with return-thunk mitigations
 * calls are what a packet pays most for. An array lookup is inlined by the verifier: with the
 * cache, the packets of an established flow are forwarded with no call at all besides the
 * redirect.
 *
 * The session tables stay the authority (they are what user space lists, counts and purges):
 * an entry is filled from the table, by a packet that found its flow there (so a new flow's
 * second packet), and is only trusted while:
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
 * Memory per possible CPU: SFC_FLOW_CACHE_SIZE entries of 40 bytes (IPv4) and of 64 bytes.
 */
#pragma once

#include "common.h"
#include "flow_key.h"
#include "ifaces.h"
#include "sessions.h"

/* Entries per CPU in each cache (a power of two): the index is the top bits of the hash. */
#define SFC_FLOW_CACHE_BITS 13
#define SFC_FLOW_CACHE_SIZE (1U << SFC_FLOW_CACHE_BITS)
/* Every this many packets (a power of two) an entry is checked against the session table. */
#define SFC_FLOW_CACHE_REFRESH 64
/* 32-bit words in each kind of key (the cache reads keys word by word). */
#define SFC_FLOW_KEY_WORDS 11

_Static_assert(sizeof(struct sfc_flow_key) == SFC_FLOW_KEY_WORDS * 4, "sfc_flow_key words");

/* What follows the key in an entry of either cache. */
struct sfc_flow_cache_state {
	__u32 hits;			/* packets served since the entry was filled */
	struct sfc_session session;	/* copy of the table's session */
};

struct sfc_flow_cache4_entry {
	struct sfc_flow_key4 key;	/* link_id 0 (no link) marks an empty entry */
	struct sfc_flow_cache_state state;
};

struct sfc_flow_cache_entry {
	struct sfc_flow_key key;	/* link_id 0 (no link) marks an empty entry */
	struct sfc_flow_cache_state state;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
#ifdef SFC_TEST_CACHE_X2
	__uint(max_entries, SFC_FLOW_CACHE_SIZE * 2);	/* test builds only: rebuilt empty */
#else
	__uint(max_entries, SFC_FLOW_CACHE_SIZE);
#endif
	__type(key, __u32);		/* sfc_flow_cache_index() of the compact key */
	__type(value, struct sfc_flow_cache4_entry);
} sfc_fcache4_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SFC_FLOW_CACHE_SIZE);
	__type(key, __u32);		/* sfc_flow_cache_index() of the full key */
	__type(value, struct sfc_flow_cache_entry);
} sfc_fcache_v1 SEC(".maps");

/* Multiplicative hashing of a key's @n words, two at a time; mirrored by
 * sfc_k8s.dataplane.flow.flow_cache_index.
 */
static __always_inline __u32 sfc_flow_cache_index(const __u32 *w, const int n)
{
	__u64 h = 0;

#pragma unroll
	for (int i = 0; i + 1 < n; i += 2)
		h = (h ^ ((__u64)w[i] << 32 | w[i + 1])) * 0x9e3779b97f4a7c15ULL;
	if (n & 1)
		h = (h ^ w[n - 1]) * 0x9e3779b97f4a7c15ULL;
	return h >> (64 - SFC_FLOW_CACHE_BITS);
}

/* This CPU's entry for IPv4 L4 flow @k4 (whichever flow it holds now). */
static __always_inline struct sfc_flow_cache4_entry *
sfc_flow_cache4_entry(const struct sfc_flow_key4 *k4)
{
	__u32 index = sfc_flow_cache_index((const __u32 *)k4, SFC_FLOW_KEY4_WORDS);

	return bpf_map_lookup_elem(&sfc_fcache4_v1, &index);
}

/* This CPU's entry for flow @key (whichever flow it holds now). */
static __always_inline struct sfc_flow_cache_entry *
sfc_flow_cache_entry(const struct sfc_flow_key *key)
{
	__u32 index = sfc_flow_cache_index((const __u32 *)key, SFC_FLOW_KEY_WORDS);

	return bpf_map_lookup_elem(&sfc_fcache_v1, &index);
}

/* The far-side endpoint that the entry made of @cached (@n key words) and @state gives a
 * packet of the flow keyed @key from near-side endpoint (@in_slot, @in_gen), its slot in
 * @far_slot; NULL to ask the session table (see above).
 */
static __always_inline const struct sfc_endpoint *sfc_flow_cache_use(const __u32 *cached,
						struct sfc_flow_cache_state *state,
						const __u32 *key, const int n, __u32 link_id,
						__u32 near, __u32 in_slot, __u32 in_gen,
						__u32 *far_slot)
{
	const struct sfc_session *s = &state->session;
	__u32 far = near ^ 1;

#pragma unroll
	for (int i = 0; i < n; i++)
		if (cached[i] != key[i])
			return NULL;
	if ((++state->hits & (SFC_FLOW_CACHE_REFRESH - 1)) == 0)
		return NULL;
	if (s->slot[near] != in_slot || s->gen[near] != in_gen)
		return NULL;
	*far_slot = s->slot[far];
	return sfc_ep_valid(*far_slot, link_id, far, s->gen[far]);
}

static __always_inline const struct sfc_endpoint *
sfc_flow_cache4_follow(struct sfc_flow_cache4_entry *e, const struct sfc_flow_key4 *k4,
		       __u32 link_id, __u32 near, __u32 in_slot, __u32 in_gen, __u32 *far_slot)
{
	if (!e)
		return NULL;
	return sfc_flow_cache_use((const __u32 *)&e->key, &e->state, (const __u32 *)k4,
				  SFC_FLOW_KEY4_WORDS, link_id, near, in_slot, in_gen, far_slot);
}

static __always_inline const struct sfc_endpoint *
sfc_flow_cache_follow(struct sfc_flow_cache_entry *e, const struct sfc_flow_key *key,
		      __u32 link_id, __u32 near, __u32 in_slot, __u32 in_gen, __u32 *far_slot)
{
	if (!e)
		return NULL;
	return sfc_flow_cache_use((const __u32 *)&e->key, &e->state, (const __u32 *)key,
				  SFC_FLOW_KEY_WORDS, link_id, near, in_slot, in_gen, far_slot);
}

/* Make the entry made of @cached (@n key words) and @state hold session @s of the flow keyed
 * @key.
 */
static __always_inline void sfc_flow_cache_keep(__u32 *cached, struct sfc_flow_cache_state *state,
						const __u32 *key, const int n,
						const struct sfc_session *s)
{
#pragma unroll
	for (int i = 0; i < n; i++)
		cached[i] = key[i];
	state->hits = 0;
	state->session = *s;
}

/* Make @e hold session @s of flow @k4 (a NULL @e is tolerated). */
static __always_inline void sfc_flow_cache4_fill(struct sfc_flow_cache4_entry *e,
						 const struct sfc_flow_key4 *k4,
						 const struct sfc_session *s)
{
	if (e)
		sfc_flow_cache_keep((__u32 *)&e->key, &e->state, (const __u32 *)k4,
				    SFC_FLOW_KEY4_WORDS, s);
}

/* Make @e hold session @s of flow @key (a NULL @e is tolerated). */
static __always_inline void sfc_flow_cache_fill(struct sfc_flow_cache_entry *e,
						const struct sfc_flow_key *key,
						const struct sfc_session *s)
{
	if (e)
		sfc_flow_cache_keep((__u32 *)&e->key, &e->state, (const __u32 *)key,
				    SFC_FLOW_KEY_WORDS, s);
}
