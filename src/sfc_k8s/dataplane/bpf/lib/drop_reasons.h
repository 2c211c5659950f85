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
};
