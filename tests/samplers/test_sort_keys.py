"""sort_descending's narrow (uint16) keys give exactly the order of the plain int64 keys they replace."""

import numpy as np
import pytest

from samplers.lengths import sort_descending


def reference_order(lengths, candidates, groups):
    sub = lengths[candidates]
    keys = [-sub[:, 1], -sub[:, 0], -sub.max(axis=1)] if sub.ndim == 2 else [-sub]
    if groups is not None:
        keys.append(groups)
    return candidates[np.lexsort(keys)]


@pytest.mark.parametrize("pairs", [False, True])
@pytest.mark.parametrize("high", [6, 300, 70_000])  # many ties; typical; beyond uint16 (the int64 fallback)
@pytest.mark.parametrize("group_ids", [None, 40, 100_000])
def test_same_order_as_int64_keys(pairs, high, group_ids):
    rng = np.random.default_rng(high + (group_ids or 0) + pairs)
    n = 3000
    lengths = rng.integers(0, high, size=(n, 2) if pairs else n)
    candidates = rng.permutation(n)[: n - 100]  # a subset, as a shard or an epoch's candidates
    groups = None if group_ids is None else np.sort(rng.integers(0, group_ids, size=len(candidates)))
    order = sort_descending(lengths, candidates, groups)
    assert (order == reference_order(lengths, candidates, groups)).all()
