/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Why the cross-connection dropped a packet. Mirrored by sfc_k8s.dataplane.DropReason;
 * codes are never renumbered, new ones are appended (below SFC_DROP_MAX).
 */
#pragma once

enum sfc_drop_reason {
	SFC_DROP_MALFORMED = 1,		/* a header is truncated or inconsistent */
	SFC_DROP_NO_ENDPOINT = 2,	/* the far side has no active endpoint */
	SFC_DROP_STALE_ENDPOINT = 3,	/* the lookup table named an endpoint no longer in the link */
	SFC_DROP_REDIRECT_FAILED = 4,	/* bpf_redirect_peer refused the target */
	/* The tunnel (tunnel.h). The first three are counted on link 0: no link is known yet. */
	SFC_DROP_TUNNEL_NO_KEY = 5,	/* a packet on the tunnel device without our key and option */
	SFC_DROP_TUNNEL_UNKNOWN_NODE = 6, /* its outer source is no node of a remote endpoint */
	SFC_DROP_TUNNEL_UNKNOWN_LINK = 7, /* its key names no link of this node */
	SFC_DROP_TUNNEL_BAD_ENDPOINT = 8, /* its ids are not a remote source on that node and a
					   * local destination on the other side of the link */
	SFC_DROP_TOO_BIG = 9,		/* too large for the tunnel once encapsulated */
	SFC_DROP_NO_TUNNEL = 10,	/* a remote endpoint was chosen but the node has no tunnel */
};
