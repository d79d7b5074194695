"""What `keras_embed.DynamicEmbedding` keys its rows with: 64-bit keys, the
key -> row map, and the sketch that counts keys holding no row yet.

- `fingerprints(values)`: farmhash64 of each value's bytes, as int64. A
  string key is its fingerprint; an int64 key's fingerprint chooses its OOV
  bucket and its sketch counters.
- `KeyMap`: a `tf.lookup.experimental.DenseHashTable` (open addressing,
  int64 -> int32: 12 bytes a bucket, at most 0.8 full, sized once, so it
  never grows while training). Such a table reserves two keys as markers of
  empty and deleted buckets; `KeyMap` keeps the rows of those two keys
  beside it, so every int64 key has a row of its own. A removed key leaves
  a deleted marker, and the table never clears them: once no bucket is
  empty, looking up an absent key fails ("Internal error in
  MutableDenseHashTable lookup", after 3 evictions in a table of 8
  buckets). `KeyMap` counts removals, and its owner rebuilds it (`clear`,
  then `insert`) before they fill half the buckets the keys leave free.
- `CountMinSketch`: `depth` rows of `width` int32 counters, halved every
  `width` sightings. A key's estimate is the least of its `depth` counters:
  never below its recent count.

Example:

>>> import tensorflow as tf
>>> keys = KeyMap(capacity=4)
>>> keys.insert(tf.constant([7, -2**63], tf.int64), tf.constant([0, 1]))
>>> keys.lookup(tf.constant([-2**63, 7, 8], tf.int64)).numpy().tolist()
[1, 0, -1]
"""

import math

import tensorflow as tf

# The two keys the hash table reserves: the lowest int64 values.
EMPTY_KEY = -(2**63)
DELETED_KEY = -(2**63) + 1
_MAX_LOAD = 0.8  # DenseHashTable grows past this share of full buckets.


def fingerprints(values):
    """The farmhash64 fingerprint of each value (int64 or string), as int64.

    >>> fingerprints(tf.constant(["a", "a", "b"])).numpy().tolist()[0] == \\
    ...     fingerprints(tf.constant(["a"])).numpy().tolist()[0]
    True
    """
    values = tf.reshape(values, [-1])
    return tf.bitcast(tf.fingerprint(values), tf.int64)


def buckets_of(keys, count):
    """`farmhash64(key) mod count` for int64 `keys`: each key's OOV bucket."""
    positive = tf.bitwise.bitwise_and(fingerprints(keys), tf.constant(2**63 - 1, tf.int64))
    return tf.math.floormod(positive, count)


class KeyMap(tf.Module):
    """int64 key -> int32 row, -1 for a key with none.

    Args:
        capacity: the most keys it holds at once.
    """

    def __init__(self, capacity):
        super().__init__(name="key_map")
        self.buckets = 2 ** math.ceil(math.log2(max(capacity / _MAX_LOAD + 1, capacity + 64)))
        self.table = tf.lookup.experimental.DenseHashTable(
            tf.int64, tf.int32, default_value=-1, empty_key=EMPTY_KEY,
            deleted_key=DELETED_KEY, initial_num_buckets=self.buckets,
        )
        # The rows of EMPTY_KEY and DELETED_KEY, which the table cannot hold.
        self.reserved_rows = tf.Variable([-1, -1], dtype=tf.int32, trainable=False)
        # Keys removed since the table was last cleared: its deleted markers.
        self.removed = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.most_removed = (self.buckets - capacity) // 2
        # The owner's stamp of the state the map was built from (see
        # DynamicEmbedding's `map_stamp`); 0: none yet.
        self.stamp = tf.Variable(0, dtype=tf.int64, trainable=False)
        # How many times it was cleared.
        self.cleared = tf.Variable(0, dtype=tf.int64, trainable=False)

    def lookup(self, keys):
        reserved = keys <= DELETED_KEY
        rows = self.table.lookup(tf.where(reserved, tf.zeros_like(keys), keys))
        reserved_row = tf.where(
            tf.equal(keys, EMPTY_KEY), self.reserved_rows[0], self.reserved_rows[1]
        )
        rows = tf.where(reserved, reserved_row, rows)
        rows.set_shape(keys.shape)  # The table's lookup has no static shape.
        return rows

    def insert(self, keys, rows):
        rows = tf.cast(rows, tf.int32)
        reserved = keys <= DELETED_KEY
        ordinary = tf.logical_not(reserved)
        self.table.insert(tf.boolean_mask(keys, ordinary), tf.boolean_mask(rows, ordinary))
        self._set_reserved(tf.boolean_mask(keys, reserved), tf.boolean_mask(rows, reserved))

    def remove(self, keys):
        reserved = keys <= DELETED_KEY
        ordinary = tf.boolean_mask(keys, tf.logical_not(reserved))
        self.table.remove(ordinary)
        self.removed.assign_add(tf.size(ordinary, out_type=tf.int64))
        removed = tf.boolean_mask(keys, reserved)
        self._set_reserved(removed, -tf.ones_like(removed, tf.int32))

    def _set_reserved(self, keys, rows):
        slots = tf.cast(keys - EMPTY_KEY, tf.int32)[:, None]
        self.reserved_rows.scatter_nd_update(slots, rows)

    def needs_clearing(self):
        """Whether deleted markers fill half the buckets keys leave free."""
        return self.removed > self.most_removed

    def clear(self):
        """Empties the map, deleted markers included: every bucket empty."""
        # A removal leaves a marker; importing empty buckets leaves none.
        # The kernel takes `(buckets, 1)` arrays, where the op's shape
        # function asks for rank 1: a shape of a length known only when the
        # graph runs leaves the rank unknown to it.
        shape = tf.boolean_mask([self.buckets, 1], tf.stack([True, self.removed >= 0]))
        tf.raw_ops.LookupTableImportV2(
            table_handle=self.table.resource_handle,
            keys=tf.fill(shape, tf.constant(EMPTY_KEY, tf.int64)),
            values=tf.fill(shape, tf.constant(-1, tf.int32)),
        )
        self.reserved_rows.assign([-1, -1])
        self.removed.assign(0)
        self.cleared.assign_add(1)


class CountMinSketch:
    """Recent counts of int64 keys in bounded memory: `depth * width` int32.

    A key's counters are `(a + i * b) mod width` for `i < depth`, `a` and `b`
    the halves of its fingerprint (Kirsch and Mitzenmacher's double hashing).
    Every counter is halved each time `width` sightings have been added
    since the last halving (TinyLFU's aging): an estimate then exceeds the
    true recent count by more than `e` with probability at most
    `exp(-depth)`, and a sketch that is never emptied does not come to admit
    every key.

    Args:
        counters: a `(depth, width)` int32 variable, zeros at first.
        added: an int64 scalar variable: sightings added since the last
            halving.
    """

    def __init__(self, counters, added):
        self.counters = counters
        self.added = added
        self.depth, self.width = counters.shape

    def _cells(self, keys):
        hashed = fingerprints(keys)
        low = tf.bitwise.bitwise_and(hashed, tf.constant(2**32 - 1, tf.int64))
        high = tf.bitwise.bitwise_or(tf.bitwise.right_shift(hashed, 32), 1)
        high = tf.bitwise.bitwise_and(high, tf.constant(2**32 - 1, tf.int64))
        steps = tf.range(self.depth, dtype=tf.int64)[:, None]
        columns = tf.math.floormod(low[None, :] + steps * high[None, :], self.width)
        depth_index = tf.broadcast_to(steps, tf.shape(columns))
        return tf.stack([depth_index, columns], axis=-1)  # (depth, n, 2)

    def add(self, keys, counts):
        """Adds `counts` to `keys`' counters; returns their estimates, then
        halves every counter if `width` sightings were added since the last
        halving."""
        cells = self._cells(keys)
        counts = tf.cast(counts, tf.int32)
        # Conservative update: each counter rises only to the key's new
        # estimate, not by the count: far fewer counters grow, and keys seen
        # once are far less often counted twice.
        raised = tf.reduce_min(tf.gather_nd(self.counters, cells), axis=0) + counts
        self.counters.scatter_nd_max(cells, tf.broadcast_to(raised[None, :], tf.shape(cells)[:2]))
        estimates = tf.reduce_min(tf.gather_nd(self.counters, cells), axis=0)
        added = self.added.assign_add(tf.reduce_sum(tf.cast(counts, tf.int64)))

        def halve():
            with tf.control_dependencies([estimates]):
                self.counters.assign(self.counters // 2)
                self.added.assign(added % self.width)
            return tf.constant(0)

        tf.cond(added >= self.width, halve, lambda: tf.constant(0))
        return estimates
