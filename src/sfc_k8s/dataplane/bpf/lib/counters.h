/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-CPU counters: per endpoint (packets and bytes each way) and per link (sessions created,
 * drops by reason). User space sums the CPUs.
 */
#pragma once

#include "common.h"
#include "drop_reasons.h"

struct sfc_ep_counters {
	__u64 rx_packets;	/* entered the link from this endpoint's interface */
	__u64 rx_bytes;
	__u64 tx_packets;	/* redirected into this endpoint's pod */
	__u64 tx_bytes;
};

struct sfc_link_stats {
	__u64 sessions_created;		/* new sessions recorded */
	__u64 drops[SFC_DROP_MAX];	/* indexed by enum sfc_drop_reason */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SFC_MAX_IFACES);
	__type(key, __u32);		/* endpoint slot; user space zeroes it when allocating */
	__type(value, struct sfc_ep_counters);
} sfc_epstats_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SFC_MAX_LINKS);
	__type(key, __u32);		/* link id */
	__type(value, struct sfc_link_stats);
} sfc_lnkstats_v1 SEC(".maps");

static __always_inline void sfc_count_rx(__u32 slot, __u32 len)
{
	struct sfc_ep_counters *c = bpf_map_lookup_elem(&sfc_epstats_v2, &slot);

	if (c) {
		c->rx_packets++;
		c->rx_bytes += len;
	}
}

static __always_inline void sfc_count_tx(__u32 slot, __u32 len)
{
	struct sfc_ep_counters *c = bpf_map_lookup_elem(&sfc_epstats_v2, &slot);

	if (c) {
		c->tx_packets++;
		c->tx_bytes += len;
	}
}

static __always_inline void sfc_count_session(__u32 link_id)
{
	struct sfc_link_stats *s = bpf_map_lookup_elem(&sfc_lnkstats_v1, &link_id);

	if (s)
		s->sessions_created++;
}

static __always_inline int sfc_drop(__u32 link_id, __u32 reason)
{
	struct sfc_link_stats *s = bpf_map_lookup_elem(&sfc_lnkstats_v1, &link_id);

	if (s && reason < SFC_DROP_MAX)
		s->drops[reason]++;
	return TC_ACT_SHOT;
}
