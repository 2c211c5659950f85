/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The cross-connection: one program at TC ingress of every participating host veth.
 *
 * interface -> (link, side); flow key; flow cache or session hit -> the recorded far-side
 * endpoint, miss -> Maglev over the far side's active endpoints and a new session;
 * bpf_redirect_peer into the chosen pod. Interfaces in no link pass untouched.
 */
#include "lib/common.h"
#include "lib/counters.h"
#include "lib/drop_reasons.h"
#include "lib/flow_cache.h"
#include "lib/flow_key.h"
#include "lib/ifaces.h"
#include "lib/maglev.h"
#include "lib/sessions.h"

static __always_inline int sfc_xc_forward(struct __sk_buff *skb, __u32 in_slot,
					  const struct sfc_endpoint *in)
{
	__u32 link_id = in->link_id, near = in->side & 1, far = near ^ 1;
	const struct sfc_endpoint *target;
	__u32 far_slot = 0, reason;
	struct sfc_flow_cache4_entry *fc4;
	struct sfc_flow_cache_entry *fc;
	struct sfc_session *s, made;
	struct sfc_flow_key4 k4;
	struct sfc_flow_key key;
	int ret;

	sfc_count_rx(in_slot, skb->len);
	/* The commonest packet (IPv4 L4, no options) is parsed into its compact key alone and
	 * looked up in its flow cache, then its session table; the full key is only built for
	 * the rest (looked up the same way) and for a new flow (the Maglev hash).
	 */
	if (sfc_flow_parse_fast4(skb, link_id, &k4)) {
		fc4 = sfc_flow_cache4_entry(&k4);
		target = sfc_flow_cache4_follow(fc4, &k4, link_id, near, in_slot, in->gen, &far_slot);
		if (target)
			goto out;
		s = bpf_map_lookup_elem(&sfc_sess4_v1, &k4);
		if (s)
			target = sfc_session_follow(s, link_id, near, in_slot, in, &far_slot);
		if (target) {
			sfc_flow_cache4_fill(fc4, &k4, s);
			goto out;
		}
		sfc_flow_key_of4(&k4, &key);
	} else {
		ret = sfc_flow_parse(skb, link_id, &key);
		if (ret < 0)
			return sfc_drop(link_id, -ret);
		fc = sfc_flow_cache_entry(&key);
		target = sfc_flow_cache_follow(fc, &key, link_id, near, in_slot, in->gen, &far_slot);
		if (target)
			goto out;
		s = sfc_session_find(&key, &k4);
		if (s)
			target = sfc_session_follow(s, link_id, near, in_slot, in, &far_slot);
		if (target) {
			sfc_flow_cache_fill(fc, &key, s);
			goto out;
		}
	}

	target = sfc_maglev_select(&key, in->link_cid, far, &far_slot, &reason);
	if (!target)
		return sfc_drop(link_id, reason);
	sfc_session_make(&made, near, in_slot, in->gen, far_slot, target->gen);
	/* The flow caches are filled from the tables, by the flow's next packet. */
	if (sfc_session_record(&key, &made) == 0)
		sfc_count_session(link_id);
out:
	sfc_count_tx(far_slot, skb->len);
	ret = bpf_redirect_peer(target->ifindex, 0);
	if (ret != TC_ACT_REDIRECT)
		return sfc_drop(link_id, SFC_DROP_REDIRECT_FAILED);
	return ret;
}

SEC("tc")
int sfc_xc_ingress(struct __sk_buff *skb)
{
	const struct sfc_endpoint *in;
	__u32 slot = 0;

	in = sfc_ep_of_iface(skb->ifindex, &slot);
	if (!in)
		return TC_ACT_OK;
	return sfc_xc_forward(skb, slot, in);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
