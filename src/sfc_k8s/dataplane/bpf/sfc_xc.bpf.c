/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The cross-connection: one program at TC ingress of every participating host veth.
 *
 * interface -> (link, side); flow key; flow cache or session hit -> the recorded far-side
 * endpoint, miss -> Maglev over the far side's active endpoints and a new session;
 * bpf_redirect_peer into the chosen pod, or the tunnel to the chosen endpoint's node.
 * An interface in no link (attached when its pod appeared, before any link names it) passes
 * untouched with TC_ACT_UNSPEC: the next program of the interface's TCX chain (or its tc
 * filters, or the stack) decides, so another program sharing the interface is not cut off.
 * A second entry point receives from the tunnel.
 */
#include "lib/common.h"
#include "lib/counters.h"
#include "lib/drop_reasons.h"
#include "lib/flow_cache.h"
#include "lib/flow_key.h"
#include "lib/ifaces.h"
#include "lib/maglev.h"
#include "lib/sessions.h"
#include "lib/tunnel.h"

#ifdef SFC_TEST_COUNT
/* Test builds only (tests/bpf/builds.py): packets seen by each entry point, so an upgrade test
 * can tell the new program from the old one by traffic. Index 0: sfc_xc_ingress, 1: the tunnel.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} sfc_test_cnt SEC(".maps");

static __always_inline void sfc_test_count(__u32 index)
{
	__u64 *count = bpf_map_lookup_elem(&sfc_test_cnt, &index);

	if (count)
		__sync_fetch_and_add(count, 1);
}
#else
static __always_inline void sfc_test_count(__u32 index) {}
#endif

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
	if (target->node)
		return sfc_tunnel_send(skb, in, target, far_slot);
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

	sfc_test_count(0);
	in = sfc_ep_of_iface(skb->ifindex, &slot);
	if (!in)
		return TC_ACT_UNSPEC; /* in no link: pass through (TCX_NEXT) */
	return sfc_xc_forward(skb, slot, in);
}

/* At TC ingress of the node's tunnel device: a packet from a remote endpoint to a local one,
 * delivered to the endpoint its key names (see tunnel.h), never balanced again.
 */
SEC("tc")
int sfc_tun_ingress(struct __sk_buff *skb)
{
	const struct sfc_endpoint *src, *dst;
	__u32 src_slot = 0, dst_slot = 0;
	struct bpf_tunnel_key tk = {};
	struct sfc_vxlan_opt opt = {};
	__u32 cid, link_id, *local;
	__be32 node;
	int ret;

	sfc_test_count(1);
	if (bpf_skb_get_tunnel_key(skb, &tk, sizeof(tk), 0) < 0 ||
	    bpf_skb_get_tunnel_opt(skb, &opt, sizeof(opt)) != sizeof(opt))
		return sfc_drop(0, SFC_DROP_TUNNEL_NO_KEY);
	node = bpf_htonl(tk.remote_ipv4);
	if (!bpf_map_lookup_elem(&sfc_nodes_v1, &node))
		return sfc_drop(0, SFC_DROP_TUNNEL_UNKNOWN_NODE);
	cid = opt.gbp & SFC_TUNNEL_GBP_MASK;
	local = bpf_map_lookup_elem(&sfc_clinks_v1, &cid);
	if (!local || !*local)
		return sfc_drop(0, SFC_DROP_TUNNEL_UNKNOWN_LINK);
	link_id = *local;
	dst = sfc_ep_by_id(link_id, tk.tunnel_id >> SFC_TUNNEL_ID_BITS, &dst_slot);
	src = sfc_ep_by_id(link_id, tk.tunnel_id & ((1 << SFC_TUNNEL_ID_BITS) - 1), &src_slot);
	if (!dst || !src || !dst->ifindex || src->node != node || src->side == dst->side)
		return sfc_drop(link_id, SFC_DROP_TUNNEL_BAD_ENDPOINT);
	sfc_count_rx(src_slot, skb->len);
	ret = sfc_tunnel_record(skb, link_id, src, src_slot, dst, dst_slot);
	if (ret < 0)
		return sfc_drop(link_id, -ret);
	sfc_count_tx(dst_slot, skb->len);
	ret = bpf_redirect_peer(dst->ifindex, 0);
	if (ret != TC_ACT_REDIRECT)
		return sfc_drop(link_id, SFC_DROP_REDIRECT_FAILED);
	return ret;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
