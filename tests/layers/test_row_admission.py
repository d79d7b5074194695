"""The rules of a `DynamicEmbedding` training step that stand alone
(`keras_embed/layers/row_admission.py`); the step itself is checked against
a NumPy model in test_dynamic_embedding.py."""

import numpy as np
import pytest
import tensorflow as tf

from keras_embed.layers import row_admission


@pytest.mark.parametrize("buckets", [1 << 16, 4, 1])
def test_the_lowest_rows_are_a_sort_by_priority_then_row(buckets, monkeypatch, rng):
    monkeypatch.setattr(row_admission, "PRIORITY_BUCKETS", buckets)
    for spread in (3, 50, 2**31 - 1):
        priority = rng.integers(-(2**31) + 1, 2**31 - 1, 500) % spread - spread // 2
        priority = priority.astype(np.int32)
        kept = rng.choice(500, 40, replace=False).astype(np.int32)
        for count in (1, 7, 460):
            got = row_admission.lowest_rows(tf.constant(priority), tf.constant(kept), count)
            candidates = [r for r in np.lexsort((np.arange(500), priority)) if r not in set(kept)]
            assert got.numpy().tolist() == candidates[:count], (spread, count)
