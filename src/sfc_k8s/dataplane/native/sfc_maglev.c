// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Maglev table population in C, loaded with ctypes by sfc_k8s/dataplane/maglev.py.
 *
 * The same algorithm as maglev.build_table_py, step for step: endpoints (already sorted by
 * name, their (offset, skip) computed in Python) take turns, in index order, claiming the
 * next still-free slot of their preference list (offset + j * skip) mod size, until every
 * slot is owned. Only the population loop is here; it is the part that costs (about
 * size * ln(size) probes), the rest stays in Python.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Fill @table (@size entries, @stride uint32 words apart) with @values[owner of the slot].
 * Returns 0, or -1 when @n is 0 or larger than @size, or when memory runs out.
 */
int sfc_maglev_fill(uint32_t size, uint32_t n, const uint32_t *offsets, const uint32_t *skips,
		    const uint32_t *values, uint32_t *table, uint32_t stride)
{
	uint32_t *owner, *pos;
	uint8_t *taken;		/* probed far more often than written: a byte per slot stays in cache */
	uint32_t filled = 0;

	if (n == 0 || n > size || stride == 0)
		return -1;
	owner = malloc((size_t)size * sizeof(*owner));
	pos = malloc((size_t)n * sizeof(*pos));
	taken = calloc(size, 1);
	if (!owner || !pos || !taken) {
		free(owner);
		free(pos);
		free(taken);
		return -1;
	}
	for (uint32_t i = 0; i < n; i++)
		pos[i] = offsets[i] % size;
	for (;;) {
		for (uint32_t i = 0; i < n; i++) {
			uint32_t slot = pos[i], skip = skips[i];

			while (taken[slot]) {
				slot += skip;
				if (slot >= size)
					slot -= size;
			}
			taken[slot] = 1;
			owner[slot] = i;
			slot += skip;
			pos[i] = slot >= size ? slot - size : slot;
			if (++filled == size)
				goto done;
		}
	}
done:
	for (uint32_t s = 0; s < size; s++)
		table[(size_t)s * stride] = values[owner[s]];
	free(owner);
	free(pos);
	free(taken);
	return 0;
}
