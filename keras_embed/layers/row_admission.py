"""How a training step of `keras_embed.DynamicEmbedding` changes its map:
which keys get rows, which rows are taken back, and what a given row holds.

One step, for the distinct keys `K` of the batch (padding left out), in
order of first appearance:

1. The step clock advances: `step = step + 1` (once for all the calls of one
   traced training step: one table for two inputs).
2. A key holds a row if the map has it and, with `ttl_steps`, the row was
   seen within the last `ttl_steps` steps (`step - last_seen <= ttl_steps`);
   a row not seen for longer is free, and its key holds none.
3. Keys without a row are counted (with `min_count > 1`, in the count-min
   sketch, which halves its counts every `sketch_width` sightings); those
   seen `min_count` times, this batch included, are admitted, in order of
   first appearance.
4. Admitted keys take the rows never used yet, lowest first; when none is
   left, they take the rows of the keys that least deserve one, lowest
   first: free rows (past `ttl_steps`) first, then by `eviction`: "lru",
   the least recently seen; "lfu", the least often seen; ties to the lower
   row. Rows of this batch's keys are never taken. When there are more
   keys to admit than rows to take, the first admitted keys win, the rest
   hold no row this step.
5. A given row gets fresh values from the layer's initializer (drawn with
   the layer's seed generator, whose state is saved), count = the key's
   count (its sketch estimate, or its count in the batch), and every
   optimizer of ours resets its slots for that row before its next update
   of it, in the same step (`fresh_rows`).
6. Every key holding a row has its count raised by its count in the batch
   and `last_seen = step`.
"""

import keras
import tensorflow as tf

# The figures of the last training step, in `fit`'s logs as
# `<layer name>_<figure>`: rows held, keys admitted, rows taken from keys
# (evicted), and the share of the step's lookups that found no row.
FIGURES = ("rows_held", "admitted", "evicted", "missed_share")

_INT32_MAX = 2**31 - 1

# Set on a DynamicEmbedding's table: a bool `tf.Variable`, one flag per row,
# set when the row is given to a new key and cleared by the optimizer of ours
# that resets the row's slots, at its next update of the row (in the same
# step, or later under gradient accumulation).
_FRESH_ROWS = "_keras_embed_fresh_rows"


def mark_fresh_rows(table, flags):
    """Attaches `flags` (a bool `tf.Variable` of `table`'s rows) to `table`."""
    setattr(table, _FRESH_ROWS, flags)


def fresh_rows(table):
    """The flags of the rows of `table` given to new keys and not updated
    since, or `None` for a table with no such rows (any table but
    `DynamicEmbedding`'s)."""
    return getattr(table, _FRESH_ROWS, None)


def held(layer, keys, rows, step):
    """Whether each key holds the row the map gives it (-1: none): the row
    is still the key's and, with `ttl_steps`, was seen within the last
    `ttl_steps` steps."""
    holds = tf.logical_and(rows >= 0, tf.equal(
        tf.gather(layer._row_keys.value, tf.maximum(rows, 0)), keys))
    if layer.ttl_steps is None:
        return holds
    last = tf.gather(layer._last_seen.value, tf.maximum(rows, 0))
    return tf.logical_and(holds, step - tf.cast(last, tf.int64) <= layer.ttl_steps)


def train_step_rows(layer, keys, earlier=None):
    """Updates `layer`'s map for a training batch of int64 `keys` (flat,
    padding left out). Returns the distinct keys, the row of each (-1:
    none), and where each of `keys` is among them. `earlier`: the rows the
    step's earlier calls looked up, or `None` for its first call."""
    if earlier is None:
        step = layer._step.value.assign_add(1)
    else:  # Another call of the same step: same clock, their rows kept.
        step = tf.identity(layer._step.value)
    unique, position, counts = tf.unique_with_counts(keys, out_idx=tf.int32)
    counts = tf.cast(counts, tf.int64)
    rows = layer._key_map.lookup(unique)
    holds = held(layer, unique, rows, step)
    rows = tf.where(holds, rows, -1)
    waiting = tf.where(tf.logical_not(holds))[:, 0]
    waiting_keys = tf.gather(unique, waiting)
    waiting_counts = tf.gather(counts, waiting)
    if layer._sketch is not None:
        seen = tf.cast(layer._sketch.add(waiting_keys, waiting_counts), tf.int64)
        eligible = seen >= layer.min_count
        waiting, waiting_keys = tf.boolean_mask(waiting, eligible), tf.boolean_mask(waiting_keys, eligible)
        start_counts = tf.boolean_mask(seen, eligible)
    else:
        start_counts = waiting_counts
    taken_rows = tf.boolean_mask(rows, holds)
    if earlier is not None:
        taken_rows = tf.unique(tf.concat([taken_rows, tf.boolean_mask(earlier, earlier >= 0)], 0))[0]
    # Seen now, before any row is taken: their place in the LRU order moves.
    layer._last_seen.value.scatter_update(tf.IndexedSlices(
        tf.fill(tf.shape(taken_rows), tf.cast(tf.minimum(step, _INT32_MAX - 1), tf.int32)), taken_rows))
    given, unused = _give_rows(layer, waiting_keys, taken_rows, step)
    admitted = tf.shape(given)[0]
    new_keys = waiting_keys[:admitted]
    # Keys whose rows are taken lose them, unless the key holds another row
    # already (a key whose row expired and that was admitted again).
    taken = given[unused:]
    old_keys = tf.gather(layer._row_keys.value, taken)
    # Rows taken from a key that held them (not free past `ttl_steps`).
    evicted = tf.reduce_sum(tf.cast(held(layer, old_keys, taken, step), tf.int32))
    if layer.ttl_steps is not None:  # Only then can a key move to another row.
        old_keys = tf.boolean_mask(old_keys, tf.equal(layer._key_map.lookup(old_keys), taken))
    layer._key_map.remove(old_keys)
    layer._key_map.insert(new_keys, given)
    layer._row_keys.value.scatter_update(tf.IndexedSlices(new_keys, given))
    layer._rows_used.value.assign_add(tf.cast(unused, layer._rows_used.dtype))
    table = layer._embeddings.value
    fresh = tf.cast(layer._fresh_values(admitted), table.dtype)
    table.scatter_update(tf.IndexedSlices(fresh, given))
    layer._fresh.scatter_update(tf.IndexedSlices(tf.ones_like(given, tf.bool), given))
    rows = tf.tensor_scatter_nd_update(rows, waiting[:admitted, None], given)
    # Counts and clocks of every key holding a row now.
    holding = tf.where(rows >= 0)[:, 0]
    holding_rows = tf.gather(rows, holding)
    old_counts = tf.cast(tf.gather(layer._counts.value, holding_rows), tf.int64)
    new_counts = tf.gather(counts, holding) + tf.where(tf.gather(holds, holding), old_counts, 0)
    start = tf.scatter_nd(waiting[:admitted, None], start_counts[:admitted], tf.shape(counts, out_type=tf.int64))
    new_counts = tf.where(tf.gather(holds, holding), new_counts, tf.gather(start, holding))
    new_counts = tf.cast(tf.minimum(new_counts, _INT32_MAX - 1), tf.int32)
    layer._counts.value.scatter_update(tf.IndexedSlices(new_counts, holding_rows))
    # The rows held before were marked seen above; the given ones now.
    last = tf.fill(tf.shape(given), tf.cast(tf.minimum(step, _INT32_MAX - 1), tf.int32))
    layer._last_seen.value.scatter_update(tf.IndexedSlices(last, given))
    _record_figures(layer, step, admitted, evicted, rows, position)
    tf.cond(layer._key_map.needs_clearing(), lambda: rebuild_map(layer, step), lambda: tf.constant(0))
    layer._key_map.stamp.assign(layer._map_stamp.value.assign_add(1))
    return unique, rows, position


def sync_map(layer):
    """Rebuilds the map if the layer's variables were assigned since it was
    built (their stamp is not the map's)."""
    tf.cond(
        tf.equal(layer._map_stamp.value, layer._key_map.stamp),
        lambda: tf.constant(0),
        lambda: rebuild_map(layer, layer._step.value),
    )


def rebuild_map(layer, step):
    """Clears the map and inserts the keys holding rows again (which also
    empties the LRU queue: the rows may have been assigned other values)."""
    layer._key_map.clear()
    rows = tf.range(tf.cast(layer._rows_used.value, tf.int32))
    keys = tf.gather(layer._row_keys.value, rows)
    if layer.ttl_steps is not None:  # Rows freed past `ttl_steps` stay out.
        last = tf.cast(tf.gather(layer._last_seen.value, rows), tf.int64)
        kept = step - last <= layer.ttl_steps
        rows, keys = tf.boolean_mask(rows, kept), tf.boolean_mask(keys, kept)
    layer._key_map.insert(keys, rows)
    layer._key_map.stamp.assign(layer._map_stamp.value)
    return tf.constant(0)


def _give_rows(layer, keys, taken_rows, step):
    """The rows for `keys` (to admit, in order): unused rows first, then
    taken ones, fewer than `keys` when every row is this batch's; and how
    many were unused."""
    capacity = layer.capacity
    wanted = tf.shape(keys)[0]
    used = tf.cast(layer._rows_used.value, tf.int32)
    unused = tf.minimum(wanted, capacity - used)
    new_rows = used + tf.range(unused)
    to_evict = wanted - unused
    # Rows this batch holds, and the new ones, are never taken.
    kept = tf.concat([taken_rows, new_rows], 0)
    to_evict = tf.minimum(to_evict, capacity - tf.shape(kept)[0])

    def evict():
        if layer.eviction == "lru":
            return _least_recently_used(layer, kept, to_evict, step)
        return lowest_rows(_priority(layer, step), kept, to_evict)

    evicted = tf.cond(to_evict > 0, evict, lambda: tf.zeros([0], tf.int32))
    return tf.concat([new_rows, evicted], 0), unused


def _priority(layer, step):
    """How much each row deserves to stay (int32): lower is taken first."""
    last = layer._last_seen.value
    priority = last if layer.eviction == "lru" else layer._counts.value
    if layer.ttl_steps is not None:  # Free rows first, the longest unseen first.
        unseen = step - tf.cast(last, tf.int64)
        free = -1 - tf.cast(tf.minimum(unseen, _INT32_MAX - 1), tf.int32)
        priority = tf.where(unseen > layer.ttl_steps, free, priority)
    return priority


def _least_recently_used(layer, kept, count, step):
    """The `count` least recently seen rows, from the LRU queue.

    The queue lists the rows of lowest priority in order, each with its
    `last_seen` then. A row seen since has a later `last_seen` (never an
    earlier one), and every row outside the queue had a higher priority,
    and only rises: so the queue's rows still unseen are, in order, the
    least recently used of all, until they run out. Then it is filled again
    with `QUEUE_STEPS` times the rows wanted, by one pass over the rows.
    """
    queue = layer._lru_queue
    queue, queue_last, position = queue.rows, queue.last_seen, queue.position
    window = queue[position:position + 2 * count]
    unseen = tf.equal(tf.gather(layer._last_seen.value, window),
                      queue_last[position:position + 2 * count])

    def from_queue():
        places = tf.cast(tf.where(unseen)[:, 0], tf.int32)[:count]
        position.assign(position + places[-1] + 1)
        return tf.gather(window, places)

    def refill():
        wanted = tf.minimum(QUEUE_STEPS * count, layer.capacity - tf.shape(kept)[0])
        rows = lowest_rows(_priority(layer, step), kept, wanted)
        queue.assign(rows)
        queue_last.assign(tf.gather(layer._last_seen.value, rows))
        position.assign(count)
        layer._lru_queue.cleared.assign(layer._key_map.cleared)
        return rows[:count]

    enough = tf.logical_and(
        tf.equal(layer._lru_queue.cleared, layer._key_map.cleared),  # None cleared since
        tf.reduce_sum(tf.cast(unseen, tf.int32)) >= count)
    return tf.cond(enough, from_queue, refill)


class LruQueue:
    """The least recently used rows, in order, with their `last_seen` when
    listed, from `position` on. Derived state, rebuilt when needed: a plain
    object, so that neither a checkpoint nor an export holds its variables
    (whose length changes)."""

    def __init__(self):
        self.rows = tf.Variable(tf.zeros([0], tf.int32), shape=[None], trainable=False)
        self.last_seen = tf.Variable(tf.zeros([0], tf.int32), shape=[None], trainable=False)
        self.position = tf.Variable(0, trainable=False)
        # The key map's `cleared` when the queue was filled.
        self.cleared = tf.Variable(-1, dtype=tf.int64, trainable=False)


# How many steps' worth of rows the LRU queue is filled with.
QUEUE_STEPS = 8
# Rows are counted by priority, up to this many priorities above the lowest.
PRIORITY_BUCKETS = 1 << 16


def lowest_rows(priority, kept, count):
    """The `count` rows of lowest `priority` (int32, one per row), ties to
    the lower row, in that order, never the rows `kept`.

    By counting rows per priority rather than a partial sort: `top_k` over
    a million rows took half of a training step. Priorities past
    `PRIORITY_BUCKETS` above the lowest share the last count, and are
    sorted (`top_k`) only if the rows wanted reach into it.

    >>> lowest_rows(tf.constant([5, 1, 1, 3, 0]), tf.constant([4]), 3).numpy().tolist()
    [1, 2, 3]
    """
    rows = tf.size(priority)
    excluded = tf.tensor_scatter_nd_update(
        tf.zeros([rows], tf.bool), kept[:, None], tf.ones_like(kept, tf.bool))
    low = tf.reduce_min(tf.where(excluded, _INT32_MAX, priority))
    span = tf.minimum(tf.constant(PRIORITY_BUCKETS - 1, tf.int64), _INT32_MAX - tf.cast(low, tf.int64))
    last_bucket = tf.cast(span, tf.int32)
    bucket = tf.minimum(priority, low + last_bucket) - low
    bucket = tf.where(excluded, PRIORITY_BUCKETS, bucket)
    per_bucket = tf.math.bincount(bucket, minlength=PRIORITY_BUCKETS + 1,
                                  maxlength=PRIORITY_BUCKETS + 1)[:PRIORITY_BUCKETS]
    filled = tf.cumsum(per_bucket)
    last_taken = tf.argmax(tf.cast(filled >= count, tf.int32), output_type=tf.int32)
    below = tf.cast(tf.where(bucket < last_taken)[:, 0], tf.int32)  # all taken
    below = tf.gather(below, tf.argsort(tf.gather(priority, below), stable=True))
    need = count - tf.shape(below)[0]
    at = tf.cast(tf.where(tf.equal(bucket, last_taken))[:, 0], tf.int32)

    def sorted_at():  # The last bucket holds several priorities.
        return tf.gather(at, tf.math.top_k(-tf.gather(priority, at), need).indices)

    chosen = tf.cond(last_taken < last_bucket, lambda: at[:need], sorted_at)
    return tf.concat([below, chosen], 0)


def _record_figures(layer, step, admitted, evicted, rows, position):
    """The step's figures: rows held, admitted, evicted, and the share of
    this batch's lookups that found no row."""
    used = tf.cast(layer._rows_used.value, tf.int64)
    if layer.ttl_steps is None:
        rows_held = used
    else:
        last = tf.cast(layer._last_seen.value[:tf.cast(used, tf.int32)], tf.int64)
        rows_held = tf.reduce_sum(tf.cast(step - last <= layer.ttl_steps, tf.int64))
    missed = tf.reduce_sum(tf.cast(tf.gather(rows, position) < 0, tf.float32))
    lookups = tf.maximum(tf.cast(tf.size(position), tf.float32), 1.0)
    layer._figures.value.assign(tf.stack([
        tf.cast(rows_held, tf.float32), tf.cast(admitted, tf.float32),
        tf.cast(evicted, tf.float32), missed / lookups,
    ]))


class StepFigure(keras.metrics.Metric):
    """One of `FIGURES`, read from the layer: a Keras metric, so that
    `fit` logs it, with no state of its own to reset."""

    def __init__(self, layer, index, figure):
        super().__init__(name=f"{layer.name}_{figure}")
        self._read = lambda: layer._figures.value[index]

    def update_state(self, *args, **kwargs):
        pass

    def result(self):
        return self._read()

    def reset_state(self):
        pass
