/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Includes, capacities and small enums shared by every part of the cross-connection.
 * The capacities are mirrored in sfc_k8s/dataplane/structs.py (checked by a test).
 */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

/* Link ids run from 1 to SFC_MAX_LINKS - 1; 0 means "no link". */
#define SFC_MAX_LINKS 1024
/* Endpoints over the whole node: host interfaces taking part in some link, and the remote
 * endpoints (on other nodes) of the links that have one here.
 */
#define SFC_MAX_IFACES 16384
/* Entries of the direct-mapped ifindex -> slot cache (a power of two). */
#define SFC_IFCACHE_SIZE 65536
/* Endpoints on one side of one link (user space enforces it). */
#define SFC_MAX_ENDPOINTS_PER_SIDE 1024
/* Stable endpoint ids within a link run from 1 to SFC_MAX_EP_ID (12 bits: the tunnel key
 * carries two of them).
 */
#define SFC_MAX_EP_ID 4095
/* Cluster-wide link ids run from 1 to SFC_MAX_CLUSTER_LINKS - 1 (16 bits: the tunnel's VXLAN
 * group policy id carries one).
 */
#define SFC_MAX_CLUSTER_LINKS 65536
/* Maglev lookup table size: a prime, about 64 slots per endpoint at full capacity. */
#define SFC_MAGLEV_SIZE 65537
/* Default size of the node-wide session table (user space may change it at load). */
#define SFC_SESSIONS_DEFAULT 1048576
/* Room kept for drop reasons in the per-link statistics. */
#define SFC_DROP_MAX 16
/* 802.1Q/802.1ad tags parsed in the frame data (an offloaded tag comes on top). */
#define SFC_MAX_VLAN_TAGS 2
/* IPv6 extension headers walked before giving up on finding the upper layer. */
#define SFC_MAX_IPV6_EXT 6
/* Same as IFNAMSIZ. */
#define SFC_IFNAMSIZ 16

/* The two sides of a cross-connection; a packet from one side leaves on the other. */
enum sfc_side {
	SFC_SIDE_A = 0,
	SFC_SIDE_B = 1,
};

/* Endpoint states: both keep their sessions, only active ones get new flows. */
enum sfc_ep_state {
	SFC_EP_ACTIVE = 0,
	SFC_EP_DRAINING = 1,
};
