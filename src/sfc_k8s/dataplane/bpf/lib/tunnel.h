/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The tunnel between nodes: one flow-based VXLAN device per node (external/collect_md, with
 * the Group Policy extension), created by user space (sfc_k8s.dataplane.tunnel).
 *
 * Sending: a flow whose endpoint is on another node is balanced once, here, where it enters
 * the link; the packet gets a tunnel key naming the endpoint and is redirected to the device:
 *   outer destination: the endpoint's node (its underlay IPv4 address);
 *   VNI (24 bits):     destination endpoint id << 12 | source endpoint id (12 bits each);
 *   VXLAN GBP id:      the link's cluster-wide id (16 bits).
 * Receiving (sfc_tun_ingress, at TC ingress of the device): the key is checked (the outer
 * source is a node of some remote endpoint; the link exists here; the source id is a remote
 * endpoint on that very node, the destination id a local endpoint, on the other side of the
 * link), the packet goes into the named endpoint's pod with no balancing, and the session
 * table records the flow with the remote source endpoint on its side, so replies go back to
 * that exact replica (also after the session had been evicted: every packet re-records it).
 */
#pragma once

#include "common.h"
#include "counters.h"
#include "drop_reasons.h"
#include "flow_key.h"
#include "ifaces.h"
#include "sessions.h"

/* Bits of each endpoint id in the VNI. */
#define SFC_TUNNEL_ID_BITS 12
/* The VXLAN GBP policy id field. */
#define SFC_TUNNEL_GBP_MASK 0xffff
/* Outer TTL: the underlay is routed, a few hops at most. */
#define SFC_TUNNEL_TTL 64

/* The node's tunnel, written by user space (sfc_tunnel_v1[0]). */
struct sfc_tunnel_cfg {
	__u32 ifindex;		/* the VXLAN device; 0: no tunnel */
	__u32 key_flags;	/* bpf_skb_set_tunnel_key flags: BPF_F_ZERO_CSUM_TX or 0 */
};

/* The VXLAN option bpf_skb_{set,get}_tunnel_opt carry (the kernel's struct vxlan_metadata). */
struct sfc_vxlan_opt {
	__u32 gbp;		/* low 16 bits: the group policy id */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sfc_tunnel_cfg);
} sfc_tunnel_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SFC_MAX_CLUSTER_LINKS);
	__type(key, __u32);		/* cluster-wide link id */
	__type(value, __u32);		/* node-local link id, 0: no such link here */
} sfc_clinks_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
#ifdef SFC_TEST_NODES_X2
	__uint(max_entries, SFC_MAX_IFACES * 2);	/* test builds only: a map that grew (copied) */
#else
	__uint(max_entries, SFC_MAX_IFACES);
#endif
	__type(key, __be32);		/* underlay IPv4 address of a node */
	__type(value, __u32);		/* remote endpoints on it */
} sfc_nodes_v1 SEC(".maps");

static __always_inline __u32 sfc_tunnel_vni(__u32 dst_id, __u32 src_id)
{
	return dst_id << SFC_TUNNEL_ID_BITS | src_id;
}

/* Send a packet that entered from local endpoint @in to remote endpoint @far (in @far_slot). */
static __always_inline int sfc_tunnel_send(struct __sk_buff *skb, const struct sfc_endpoint *in,
					   const struct sfc_endpoint *far, __u32 far_slot)
{
	struct bpf_tunnel_key key = {};
	struct sfc_vxlan_opt opt = {};
	const struct sfc_tunnel_cfg *cfg;
	__u32 zero = 0, mtu_len = 0;
	long ret;

	cfg = bpf_map_lookup_elem(&sfc_tunnel_v1, &zero);
	if (!cfg || !cfg->ifindex)
		return sfc_drop(in->link_id, SFC_DROP_NO_TUNNEL);
	/* The device's MTU is what the underlay leaves after the encapsulation; a GSO packet is
	 * checked segment by segment.
	 */
	ret = bpf_check_mtu(skb, cfg->ifindex, &mtu_len, 0, BPF_MTU_CHK_SEGS);
	if (ret > 0)
		return sfc_drop(in->link_id, SFC_DROP_TOO_BIG);
	if (ret < 0)
		return sfc_drop(in->link_id, SFC_DROP_NO_TUNNEL);
	key.remote_ipv4 = bpf_ntohl(far->node);
	key.tunnel_id = sfc_tunnel_vni(far->id, in->id);
	key.tunnel_ttl = SFC_TUNNEL_TTL;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), cfg->key_flags) < 0)
		return sfc_drop(in->link_id, SFC_DROP_NO_TUNNEL);
	opt.gbp = in->link_cid & SFC_TUNNEL_GBP_MASK;
	if (bpf_skb_set_tunnel_opt(skb, &opt, sizeof(opt)) < 0)
		return sfc_drop(in->link_id, SFC_DROP_NO_TUNNEL);
	sfc_count_tx(far_slot, skb->len);
	return bpf_redirect(cfg->ifindex, 0);
}

/* Make the session of the flow in @skb name (@src, @src_slot) on its side and (@dst,
 * @dst_slot) on the other, unless it already does. 0, or minus a drop reason.
 */
static __always_inline int sfc_tunnel_record(struct __sk_buff *skb, __u32 link_id,
					     const struct sfc_endpoint *src, __u32 src_slot,
					     const struct sfc_endpoint *dst, __u32 dst_slot)
{
	struct sfc_session want, *s;
	struct sfc_flow_key4 k4;
	struct sfc_flow_key key;
	int in4, ret;

	sfc_session_make(&want, src->side & 1, src_slot, src->gen, dst_slot, dst->gen);
	in4 = sfc_flow_parse_fast4(skb, link_id, &k4);
	if (!in4) {
		ret = sfc_flow_parse(skb, link_id, &key);
		if (ret < 0)
			return ret;
		in4 = sfc_session_key4(&key, &k4);
	}
	s = in4 ? bpf_map_lookup_elem(&sfc_sess4_v1, &k4) :
		  bpf_map_lookup_elem(&sfc_sessions_v2, &key);
	if (s) {
		if (s->slot[0] != want.slot[0] || s->slot[1] != want.slot[1] ||
		    s->gen[0] != want.gen[0] || s->gen[1] != want.gen[1])
			*s = want;
		return 0;
	}
	ret = in4 ? bpf_map_update_elem(&sfc_sess4_v1, &k4, &want, BPF_ANY) :
		    bpf_map_update_elem(&sfc_sessions_v2, &key, &want, BPF_ANY);
	if (ret == 0)
		sfc_count_session(link_id);
	return 0;
}
