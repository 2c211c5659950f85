/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Flow key: what makes two packets "the same flow" for the cross-connection.
 *
 * The key is direction-normalised (the lower (address, port) end first, as 32-bit words in
 * host order) so a flow and its replies share one session entry. What goes in it:
 *   TCP/UDP/UDP-Lite/SCTP, not fragmented: addresses, protocol and ports;
 *   other IP, and every fragment of a fragmented packet: addresses and protocol;
 *   ICMP/ICMPv6 errors: the key of the packet they quote (so they follow its flow);
 *   ARP (Ethernet/IPv4) and ICMPv6 neighbour discovery: the IP pair;
 *   anything else: the MAC pair.
 * The first VLAN id of the frame (offloaded or in the data) is part of every key.
 * Mirrored by sfc_k8s.dataplane.structs.FlowKey and built in Python by sfc_k8s.dataplane.flow.
 */
#pragma once

#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/icmpv6.h>
#include "common.h"
#include "drop_reasons.h"

/* IPv4 fragment bits of frag_off (host order), as in the kernel's net/ip.h. */
#define SFC_IP_MF 0x2000
#define SFC_IP_OFFSET 0x1fff

enum sfc_flow_kind {
	SFC_FLOW_L4_V4 = 1,	/* IPv4 addresses, protocol, ports */
	SFC_FLOW_L4_V6 = 2,	/* IPv6 addresses, protocol, ports */
	SFC_FLOW_L3_V4 = 3,	/* IPv4 addresses and protocol */
	SFC_FLOW_L3_V6 = 4,	/* IPv6 addresses and protocol */
	SFC_FLOW_ARP = 5,	/* ARP sender and target IPv4 addresses */
	SFC_FLOW_ND = 6,	/* ICMPv6 neighbour discovery IPv6 pair */
	SFC_FLOW_L2 = 7,	/* source and destination MAC */
};

struct sfc_flow_key {
	__u32 link_id;		/* link the packet entered: flows of two links never meet */
	__u8 kind;		/* enum sfc_flow_kind */
	__u8 proto;		/* IP protocol (L4/L3 kinds), 0 otherwise */
	__u16 vlan;		/* first 802.1Q VLAN id (host order), 0 when untagged */
	__be16 port_lo;		/* port of the lower end (L4 kinds), else 0 */
	__be16 port_hi;		/* port of the higher end (L4 kinds), else 0 */
	__be32 addr_lo[4];	/* lower address: IPv4 in word 0, IPv6, or MAC in bytes 0-5 */
	__be32 addr_hi[4];	/* higher address, same layout */
};

/* Parsers write some fields of a key two at a time, as whole words (see flow_cache.h). */
_Static_assert(__builtin_offsetof(struct sfc_flow_key, kind) == 4 &&
	       __builtin_offsetof(struct sfc_flow_key, proto) == 5 &&
	       __builtin_offsetof(struct sfc_flow_key, vlan) == 6 &&
	       __builtin_offsetof(struct sfc_flow_key, port_lo) == 8, "sfc_flow_key words");

/* The word whose two halves in memory are @first then @second. */
static __always_inline __u32 sfc_word_of(__u16 first, __u16 second)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return first | (__u32)second << 16;
#else
	return (__u32)first << 16 | second;
#endif
}

/* The half-word whose two bytes in memory are @first then @second. */
static __always_inline __u16 sfc_half_of(__u8 first, __u8 second)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return first | (__u16)second << 8;
#else
	return (__u16)first << 8 | second;
#endif
}

/* An 802.1Q/802.1ad tag as it sits after the MAC addresses. */
struct sfc_vlan_tag {
	__be16 tci;		/* priority, DEI, VLAN id */
	__be16 encap_proto;	/* ethertype of what follows */
};

/* ARP for Ethernet/IPv4, the only kind keyed on its IP pair. */
struct sfc_arp_eth_ipv4 {
	__be16 htype;		/* 1: Ethernet */
	__be16 ptype;		/* 0x0800: IPv4 */
	__u8 hlen;		/* 6 */
	__u8 plen;		/* 4 */
	__be16 oper;		/* request/reply */
	__u8 sha[ETH_ALEN];	/* sender MAC */
	__u8 spa[4];		/* sender IPv4 */
	__u8 tha[ETH_ALEN];	/* target MAC */
	__u8 tpa[4];		/* target IPv4 */
};

/* Generic IPv6 extension header start (hop-by-hop, routing, destination options, AH). */
struct sfc_ipv6_ext {
	__u8 nexthdr;
	__u8 hdrlen;
};

/* IPv6 fragment header. */
struct sfc_ipv6_frag {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;	/* offset << 3 | M flag */
	__be32 identification;
};

static __always_inline int sfc_flow_is_l4(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_UDPLITE ||
	       proto == IPPROTO_SCTP;
}

/* -1, 0, 1 as @a sorts before, with or after @b (host-order words, a total order). */
static __always_inline int sfc_flow_addr_cmp(const __be32 *a, const __be32 *b)
{
#pragma unroll
	for (int i = 0; i < 4; i++) {
		if (a[i] != b[i])
			return (__u32)a[i] < (__u32)b[i] ? -1 : 1;
	}
	return 0;
}

/* Fill both ends of @key, lower end first. */
static __always_inline void sfc_flow_set_ends(struct sfc_flow_key *key, const __be32 *src,
					      const __be32 *dst, __be16 sport, __be16 dport)
{
	int cmp = sfc_flow_addr_cmp(src, dst);
	int swap = cmp > 0 || (cmp == 0 && (__u16)sport > (__u16)dport);

#pragma unroll
	for (int i = 0; i < 4; i++) {
		key->addr_lo[i] = swap ? dst[i] : src[i];
		key->addr_hi[i] = swap ? src[i] : dst[i];
	}
	/* The two ports as one word (port_lo, port_hi): the flow cache reads whole words. */
	((__u32 *)key)[2] = swap ? sfc_word_of(dport, sport) : sfc_word_of(sport, dport);
}

/* Ports of a TCP/UDP/SCTP header at @off (the first four bytes in all of them). */
static __always_inline int sfc_flow_ports(struct __sk_buff *skb, __u32 off, __be16 *ports)
{
	if (bpf_skb_load_bytes(skb, off, ports, 2 * sizeof(__be16)) < 0)
		return -SFC_DROP_MALFORMED;
	return 0;
}

/* ICMP errors about a packet (destination unreachable, "fragmentation needed" included, time
 * exceeded, parameter problem) carry the start of that packet. They are keyed on it, so the
 * error reaches the replica pair that carries the flow it is about (a stateful NF expects it,
 * and path MTU discovery depends on it). 1 with @key filled, 0 when the quoted packet is too
 * short to tell: the error is then keyed as plain ICMP.
 */
static __always_inline int sfc_flow_icmp4_error(struct __sk_buff *skb, __u32 off,
						struct sfc_flow_key *key)
{
	__be32 src[4] = {}, dst[4] = {};
	__be16 ports[2] = {};
	struct iphdr inner;
	__u8 type;
	__u32 hlen;

	if (bpf_skb_load_bytes(skb, off, &type, sizeof(type)) < 0)
		return 0;
	if (type != 3 && type != 11 && type != 12)
		return 0;
	off += 8;	/* the ICMP header */
	if (bpf_skb_load_bytes(skb, off, &inner, sizeof(inner)) < 0)
		return 0;
	hlen = inner.ihl * 4;
	if (inner.version != 4 || hlen < sizeof(inner))
		return 0;
	src[0] = inner.saddr;
	dst[0] = inner.daddr;
	key->proto = inner.protocol;
	key->kind = SFC_FLOW_L3_V4;
	if (!(inner.frag_off & bpf_htons(SFC_IP_MF | SFC_IP_OFFSET)) &&
	    sfc_flow_is_l4(inner.protocol) && sfc_flow_ports(skb, off + hlen, ports) == 0)
		key->kind = SFC_FLOW_L4_V4;
	sfc_flow_set_ends(key, src, dst, ports[0], ports[1]);
	return 1;
}

/* The same for ICMPv6 errors (destination unreachable, packet too big, time exceeded,
 * parameter problem); the quoted packet's extension headers are not walked.
 */
static __always_inline int sfc_flow_icmp6_error(struct __sk_buff *skb, __u32 off, __u8 type,
						struct sfc_flow_key *key)
{
	__be16 ports[2] = {};
	struct ipv6hdr inner;

	if (type < 1 || type > 4)
		return 0;
	off += 8;
	if (bpf_skb_load_bytes(skb, off, &inner, sizeof(inner)) < 0 || inner.version != 6)
		return 0;
	key->proto = inner.nexthdr;
	key->kind = SFC_FLOW_L3_V6;
	if (sfc_flow_is_l4(inner.nexthdr) && sfc_flow_ports(skb, off + sizeof(inner), ports) == 0)
		key->kind = SFC_FLOW_L4_V6;
	sfc_flow_set_ends(key, inner.saddr.in6_u.u6_addr32, inner.daddr.in6_u.u6_addr32, ports[0],
			  ports[1]);
	return 1;
}

static __always_inline int sfc_flow_ipv4(struct __sk_buff *skb, __u32 off,
					 struct sfc_flow_key *key)
{
	__be32 src[4] = {}, dst[4] = {};
	__be16 ports[2] = {};
	struct iphdr ip;
	__u32 hlen;

	if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
		return -SFC_DROP_MALFORMED;
	hlen = ip.ihl * 4;
	if (ip.version != 4 || hlen < sizeof(ip) || bpf_ntohs(ip.tot_len) < hlen ||
	    off + hlen > skb->len)
		return -SFC_DROP_MALFORMED;
	src[0] = ip.saddr;
	dst[0] = ip.daddr;
	key->proto = ip.protocol;
	/* Only a whole packet has ports; all fragments share the (addresses, protocol) key. */
	if (!(ip.frag_off & bpf_htons(SFC_IP_MF | SFC_IP_OFFSET)) && sfc_flow_is_l4(ip.protocol)) {
		if (sfc_flow_ports(skb, off + hlen, ports) < 0)
			return -SFC_DROP_MALFORMED;
		key->kind = SFC_FLOW_L4_V4;
	} else if (ip.protocol == IPPROTO_ICMP && !(ip.frag_off & bpf_htons(SFC_IP_OFFSET)) &&
		   sfc_flow_icmp4_error(skb, off + hlen, key)) {
		return 0;
	} else {
		key->kind = SFC_FLOW_L3_V4;
	}
	sfc_flow_set_ends(key, src, dst, ports[0], ports[1]);
	return 0;
}

/* ICMPv6 neighbour discovery: the pair of IPv6 addresses the exchange is about. A neighbour
 * solicitation goes to a multicast group, so it is keyed (source, target); the advertisement
 * answering it comes from the target to the source, which normalises to the same pair.
 */
static __always_inline int sfc_flow_nd(struct __sk_buff *skb, __u32 off, __u8 type,
				       struct ipv6hdr *ip6, struct sfc_flow_key *key)
{
	__be32 target[4];
	__be16 none = 0;

	key->kind = SFC_FLOW_ND;
	key->proto = 0;
	if (type == 135 /* neighbour solicitation */) {
		if (bpf_skb_load_bytes(skb, off + 8, target, sizeof(target)) < 0)
			return -SFC_DROP_MALFORMED;
		sfc_flow_set_ends(key, ip6->saddr.in6_u.u6_addr32, target, none, none);
	} else {
		sfc_flow_set_ends(key, ip6->saddr.in6_u.u6_addr32, ip6->daddr.in6_u.u6_addr32,
				  none, none);
	}
	return 0;
}

static __always_inline int sfc_flow_ipv6(struct __sk_buff *skb, __u32 off,
					 struct sfc_flow_key *key)
{
	__be16 ports[2] = {};
	struct ipv6hdr ip6;
	int fragment = 0;
	__u8 nexthdr;

	if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)) < 0)
		return -SFC_DROP_MALFORMED;
	if (ip6.version != 6)
		return -SFC_DROP_MALFORMED;
	nexthdr = ip6.nexthdr;
	off += sizeof(ip6);

#pragma unroll
	for (int i = 0; i < SFC_MAX_IPV6_EXT; i++) {
		struct sfc_ipv6_frag frag;
		struct sfc_ipv6_ext ext;

		if (nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
		    nexthdr == IPPROTO_DSTOPTS || nexthdr == IPPROTO_AH) {
			if (bpf_skb_load_bytes(skb, off, &ext, sizeof(ext)) < 0)
				return -SFC_DROP_MALFORMED;
			/* AH counts its length in 4-byte units minus 2, the others in 8-byte minus 1. */
			off += nexthdr == IPPROTO_AH ? (ext.hdrlen + 2) * 4 : (ext.hdrlen + 1) * 8;
			nexthdr = ext.nexthdr;
		} else if (nexthdr == IPPROTO_FRAGMENT) {
			if (bpf_skb_load_bytes(skb, off, &frag, sizeof(frag)) < 0)
				return -SFC_DROP_MALFORMED;
			if (frag.frag_off & bpf_htons(0xfff9))
				fragment = 1;
			off += sizeof(frag);
			nexthdr = frag.nexthdr;
		} else {
			break;
		}
	}
	key->proto = nexthdr;

	if (nexthdr == IPPROTO_ICMPV6 && !fragment) {
		__u8 type;

		if (bpf_skb_load_bytes(skb, off, &type, sizeof(type)) < 0)
			return -SFC_DROP_MALFORMED;
		if (type >= 133 && type <= 137)
			return sfc_flow_nd(skb, off, type, &ip6, key);
		if (sfc_flow_icmp6_error(skb, off, type, key))
			return 0;
	}
	if (!fragment && sfc_flow_is_l4(nexthdr)) {
		if (sfc_flow_ports(skb, off, ports) < 0)
			return -SFC_DROP_MALFORMED;
		key->kind = SFC_FLOW_L4_V6;
	} else {
		/* Includes too many extension headers to walk: keyed on the last one seen. */
		key->kind = SFC_FLOW_L3_V6;
	}
	sfc_flow_set_ends(key, ip6.saddr.in6_u.u6_addr32, ip6.daddr.in6_u.u6_addr32, ports[0],
			  ports[1]);
	return 0;
}

static __always_inline void sfc_flow_l2(const struct ethhdr *eth, struct sfc_flow_key *key)
{
	__be32 src[4] = {}, dst[4] = {};
	__be16 none = 0;

	__builtin_memcpy(src, eth->h_source, ETH_ALEN);
	__builtin_memcpy(dst, eth->h_dest, ETH_ALEN);
	key->kind = SFC_FLOW_L2;
	sfc_flow_set_ends(key, src, dst, none, none);
}

static __always_inline int sfc_flow_arp(struct __sk_buff *skb, __u32 off,
					const struct ethhdr *eth, struct sfc_flow_key *key)
{
	__be32 spa[4] = {}, tpa[4] = {};
	struct sfc_arp_eth_ipv4 arp;
	__be16 none = 0;

	if (bpf_skb_load_bytes(skb, off, &arp, sizeof(arp)) < 0)
		return -SFC_DROP_MALFORMED;
	if (arp.htype != bpf_htons(1) || arp.ptype != bpf_htons(ETH_P_IP) ||
	    arp.hlen != ETH_ALEN || arp.plen != 4) {
		sfc_flow_l2(eth, key);
		return 0;
	}
	__builtin_memcpy(spa, arp.spa, 4);
	__builtin_memcpy(tpa, arp.tpa, 4);
	key->kind = SFC_FLOW_ARP;
	sfc_flow_set_ends(key, spa, tpa, none, none);
	return 0;
}

/* The key of an IPv4 TCP/UDP/UDP-Lite/SCTP flow (kind SFC_FLOW_L4_V4) in the IPv4 session
 * table: the fields of struct sfc_flow_key such a flow uses, 20 bytes instead of 44, so the
 * kernel hashes and compares five words rather than eleven on every packet of these flows.
 */
struct sfc_flow_key4 {
	__u32 link_id;
	__u16 vlan;
	__u8 proto;
	__u8 pad;		/* zero */
	__be16 port_lo;
	__be16 port_hi;
	__be32 addr_lo;
	__be32 addr_hi;
};

/* The key is also handled as five 32-bit words (struct sfc_flow_key4 words view): written
 * whole by the parser and read whole by the flow cache, so that no wide load ever spans
 * several narrow stores (the CPU cannot forward those, and stalls).
 */
#define SFC_FLOW_KEY4_WORDS 5
_Static_assert(sizeof(struct sfc_flow_key4) == SFC_FLOW_KEY4_WORDS * 4, "sfc_flow_key4 words");
_Static_assert(__builtin_offsetof(struct sfc_flow_key4, port_lo) == 8, "sfc_flow_key4 words");

/* The full key of the flow of @k4 (for the Maglev hash, which covers the whole key). */
static __always_inline void sfc_flow_key_of4(const struct sfc_flow_key4 *k4,
					     struct sfc_flow_key *key)
{
	key->link_id = k4->link_id;
	key->kind = SFC_FLOW_L4_V4;
	key->proto = k4->proto;
	key->vlan = k4->vlan;
	key->port_lo = k4->port_lo;
	key->port_hi = k4->port_hi;
	key->addr_lo[0] = k4->addr_lo;
	key->addr_hi[0] = k4->addr_hi;
	key->addr_lo[1] = key->addr_lo[2] = key->addr_lo[3] = 0;
	key->addr_hi[1] = key->addr_hi[2] = key->addr_hi[3] = 0;
}

/* The commonest case read in place (direct packet access, no copies) straight into the
 * compact key: TCP/UDP/UDP-Lite/SCTP over IPv4 with no options and no fragmentation, its tag
 * (if any) offloaded. Returns 1 with @k4 filled, 0 when the packet is anything else.
 */
static __always_inline int sfc_flow_parse_fast4(struct __sk_buff *skb, __u32 link_id,
						struct sfc_flow_key4 *k4)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__be16 *ports = (void *)(ip + 1);
	__u32 *w = (__u32 *)k4;
	__be32 saddr, daddr;
	__be16 sport, dport;
	__u16 vlan;
	int swap;

	if ((void *)(ports + 2) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	if (ip->version != 4 || ip->ihl != 5 || bpf_ntohs(ip->tot_len) < sizeof(*ip) ||
	    (ip->frag_off & bpf_htons(SFC_IP_MF | SFC_IP_OFFSET)) || !sfc_flow_is_l4(ip->protocol))
		return 0;
	/* sfc_flow_set_ends for one-word addresses, without the zeroed copies. */
	saddr = ip->saddr;
	daddr = ip->daddr;
	sport = ports[0];
	dport = ports[1];
	swap = (__u32)saddr > (__u32)daddr || (saddr == daddr && (__u16)sport > (__u16)dport);
	vlan = skb->vlan_present ? skb->vlan_tci & 0x0fff : 0;
	/* Whole words, in the field order of struct sfc_flow_key4 (pad is zero). */
	w[0] = link_id;
	w[1] = sfc_word_of(vlan, sfc_half_of(ip->protocol, 0));
	w[2] = swap ? sfc_word_of(dport, sport) : sfc_word_of(sport, dport);
	w[3] = swap ? daddr : saddr;
	w[4] = swap ? saddr : daddr;
	return 1;
}

/* The rest of the common case read in place: TCP/UDP/UDP-Lite/SCTP over IPv6 with no
 * extension header (the IPv4 case is sfc_flow_parse_fast4, which the caller has tried first).
 * Returns 1 with @key filled, 0 to take the general path, which builds the same key for these
 * packets.
 */
static __always_inline int sfc_flow_parse_fast6(struct __sk_buff *skb, struct sfc_flow_key *key)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__be16 *ports;

	if ((void *)(eth + 1) > data_end)
		return 0;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		ports = (void *)(ip6 + 1);
		if ((void *)(ports + 2) > data_end)
			return 0;
		if (ip6->version != 6 || !sfc_flow_is_l4(ip6->nexthdr))
			return 0;
		/* kind, proto and vlan as one word, like the ports (see sfc_flow_set_ends). */
		((__u32 *)key)[1] = sfc_word_of(sfc_half_of(SFC_FLOW_L4_V6, ip6->nexthdr),
						key->vlan);
		sfc_flow_set_ends(key, ip6->saddr.in6_u.u6_addr32, ip6->daddr.in6_u.u6_addr32,
				  ports[0], ports[1]);
		return 1;
	}
	return 0;
}

/* Build the flow key of the frame in @skb; 0, or minus a drop reason. Any frame: an IPv4 L4
 * one that sfc_flow_parse_fast4 turned down (options, a tag in the data) gets its key here.
 */
static __always_inline int sfc_flow_parse(struct __sk_buff *skb, __u32 link_id,
					  struct sfc_flow_key *key)
{
	struct ethhdr eth;
	__u32 off = ETH_HLEN;
	__be16 proto;
	int tagged = 0;

	key->link_id = link_id;
	/* The stack moves the outer tag into the skb before TC ingress. */
	key->vlan = skb->vlan_present ? skb->vlan_tci & 0x0fff : 0;
	if (sfc_flow_parse_fast6(skb, key))
		return 0;

	__builtin_memset(key, 0, sizeof(*key));
	key->link_id = link_id;
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
		return -SFC_DROP_MALFORMED;
	proto = eth.h_proto;
	if (skb->vlan_present) {
		key->vlan = skb->vlan_tci & 0x0fff;
		tagged = 1;
	}

#pragma unroll
	for (int i = 0; i < SFC_MAX_VLAN_TAGS; i++) {
		struct sfc_vlan_tag tag;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if (bpf_skb_load_bytes(skb, off, &tag, sizeof(tag)) < 0)
			return -SFC_DROP_MALFORMED;
		if (!tagged) {
			key->vlan = bpf_ntohs(tag.tci) & 0x0fff;
			tagged = 1;
		}
		proto = tag.encap_proto;
		off += sizeof(tag);
	}

	if (proto == bpf_htons(ETH_P_IP))
		return sfc_flow_ipv4(skb, off, key);
	if (proto == bpf_htons(ETH_P_IPV6))
		return sfc_flow_ipv6(skb, off, key);
	if (proto == bpf_htons(ETH_P_ARP))
		return sfc_flow_arp(skb, off, &eth, key);
	sfc_flow_l2(&eth, key);
	return 0;
}
