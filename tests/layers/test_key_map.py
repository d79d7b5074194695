"""The key -> row map and the count-min sketch of `DynamicEmbedding`
(`keras_embed/layers/key_map.py`)."""

import pytest
import tensorflow as tf

from keras_embed.layers.key_map import DELETED_KEY
from keras_embed.layers.key_map import EMPTY_KEY
from keras_embed.layers.key_map import CountMinSketch
from keras_embed.layers.key_map import KeyMap


def test_tensorflow_s_dense_table_fails_once_deleted_markers_fill_it():
    # Why KeyMap clears itself: TensorFlow keeps a removed key's marker, and a
    # lookup of an absent key finds no empty bucket to stop at.
    table = tf.lookup.experimental.DenseHashTable(
        tf.int64, tf.int32, -1, empty_key=EMPTY_KEY, deleted_key=DELETED_KEY, initial_num_buckets=8)
    table.insert(tf.constant([1, 2, 3, 4, 5], tf.int64), tf.constant([0, 1, 2, 3, 4]))
    with pytest.raises(tf.errors.InternalError, match="MutableDenseHashTable lookup"):
        for key in range(6, 30):
            table.remove(tf.constant([key - 5], tf.int64))
            table.insert(tf.constant([key], tf.int64), tf.constant([key % 5]))
            table.lookup(tf.constant([1000], tf.int64))


def test_a_key_map_cleared_when_it_asks_never_fails(rng):
    keys = KeyMap(capacity=5)
    held = {}
    for step in range(300):  # about 4 clearings (every 62 removals at 128 buckets)
        key = int(rng.integers(-(2**62), 2**62))
        if len(held) == 5:
            old = next(iter(held))
            keys.remove(tf.constant([old], tf.int64))
            row = held.pop(old)
        else:
            row = len(held)
        keys.insert(tf.constant([key], tf.int64), tf.constant([row]))
        held[key] = row
        if keys.needs_clearing():
            keys.clear()
            keys.insert(tf.constant(list(held), tf.int64), tf.constant(list(held.values())))
        assert keys.lookup(tf.constant([key, 7], tf.int64)).numpy().tolist() == [row, -1]
    assert int(keys.cleared.numpy()) > 0


def test_the_two_reserved_keys_have_rows_of_their_own():
    keys = KeyMap(capacity=4)
    keys.insert(tf.constant([EMPTY_KEY, DELETED_KEY, 0], tf.int64), tf.constant([2, 3, 1]))
    assert keys.lookup(tf.constant([DELETED_KEY, EMPTY_KEY, 0, 1], tf.int64)).numpy().tolist() == [3, 2, 1, -1]
    keys.remove(tf.constant([EMPTY_KEY], tf.int64))
    assert keys.lookup(tf.constant([EMPTY_KEY, DELETED_KEY], tf.int64)).numpy().tolist() == [-1, 3]


def test_the_sketch_counts_conservatively_and_halves_every_width_sightings():
    counters = tf.Variable(tf.zeros([4, 64], tf.int32))
    added = tf.Variable(tf.zeros([], tf.int64))
    sketch = CountMinSketch(counters, added)
    keys = tf.constant([11, 22], tf.int64)
    assert sketch.add(keys, tf.constant([3, 1])).numpy().tolist() == [3, 1]
    # Conservative update: no counter rises above the key's new estimate.
    assert int(tf.reduce_max(counters).numpy()) == 3
    assert sketch.add(keys, tf.constant([2, 0])).numpy().tolist() == [5, 1]
    # 6 sightings so far; 58 more reach the width: every counter is halved.
    estimates = sketch.add(tf.constant([33], tf.int64), tf.constant([58])).numpy().tolist()
    assert estimates == [58]  # the estimate, before halving
    assert int(added.numpy()) == 0
    assert sketch.add(keys, tf.constant([0, 0])).numpy().tolist() == [2, 0]
