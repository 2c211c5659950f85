/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Flow hash for the Maglev lookup: MurmurHash3 (x86, 32-bit) over the key's 32-bit words.
 * Mirrored by sfc_k8s.dataplane.flow.flow_hash so tests can predict the chosen endpoint.
 */
#pragma once

#include "common.h"

#define SFC_HASH_SEED 0x5fc0c0deU

static __always_inline __u32 sfc_rotl32(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

static __always_inline __u32 sfc_hash_words(const __u32 *words, int n)
{
	__u32 h = SFC_HASH_SEED;

#pragma unroll
	for (int i = 0; i < n; i++) {
		__u32 k = words[i] * 0xcc9e2d51U;

		k = sfc_rotl32(k, 15) * 0x1b873593U;
		h = sfc_rotl32(h ^ k, 13) * 5 + 0xe6546b64U;
	}
	h ^= (__u32)n * 4;
	h ^= h >> 16;
	h *= 0x85ebca6bU;
	h ^= h >> 13;
	h *= 0xc2b2ae35U;
	h ^= h >> 16;
	return h;
}
