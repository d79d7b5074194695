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

from typing import NamedTuple

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
    """Whether each key holds the row the map gives it (-1: none). The map
    holds only keys with rows of their own; with `ttl_steps`, the row must
    also still be the key's and have been seen within the last `ttl_steps`
    steps (a freed row stays in the map until it is given again)."""
    holds = rows >= 0
    if layer.ttl_steps is None:
        return holds
    safe = tf.maximum(rows, 0)
    holds = tf.logical_and(holds, tf.equal(tf.gather(layer._row_keys.value, safe), keys))
    last = tf.gather(layer._last_seen.value, safe)
    return tf.logical_and(holds, step - tf.cast(last, tf.int64) <= layer.ttl_steps)


class StepLookup(NamedTuple):
    """What `look_up` found for a training batch's keys."""

    step: tf.Tensor  # the step clock, this step
    unique: tf.Tensor  # the distinct keys, in order of first appearance
    position: tf.Tensor  # where each key of the batch is among `unique`
    counts: tf.Tensor  # how often each distinct key is in the batch (int64)
    rows: tf.Tensor  # the row each distinct key holds, -1: none yet
    holds: tf.Tensor  # rows >= 0
    admitting: tf.Tensor  # places in `unique` of the keys to admit, in order
    start_counts: tf.Tensor  # their counts once admitted
    kept: tf.Tensor  # the rows this step's calls hold: never taken
    fresh: tf.Tensor  # the values of the rows the admitted keys get


def look_up(layer, keys, earlier=None):
    """The first half of a training step for int64 `keys` (flat, padding
    left out): advances the clock, finds the rows the distinct keys hold,
    counts the others (the sketch), and chooses and draws what the keys to
    admit get. It writes neither the map nor the table, so the forward pass
    can read the rows meanwhile; `admit` does the rest. `earlier`: the rows
    the step's earlier calls looked up, or `None` for its first call."""
    if earlier is None:
        step = layer._step.value.assign_add(1)
    else:  # Another call of the same step: same clock, their rows kept.
        step = tf.identity(layer._step.value)
    unique, position, counts = tf.unique_with_counts(keys, out_idx=tf.int32)
    counts = tf.cast(counts, tf.int64)
    rows = layer._key_map.lookup(unique)
    holds = held(layer, unique, rows, step)
    rows = tf.where(holds, rows, -1)
    waiting = tf.cast(tf.where(tf.logical_not(holds))[:, 0], tf.int32)
    if layer._sketch is not None:
        seen = layer._sketch.add(tf.gather(unique, waiting), tf.gather(counts, waiting))
        eligible = tf.cast(seen, tf.int64) >= layer.min_count
        waiting = tf.boolean_mask(waiting, eligible)
        start_counts = tf.cast(tf.boolean_mask(seen, eligible), tf.int64)
    else:
        start_counts = tf.gather(counts, waiting)
    kept = tf.boolean_mask(rows, holds)
    if earlier is not None:
        kept = tf.unique(tf.concat([kept, tf.boolean_mask(earlier, earlier >= 0)], 0))[0]
    # Every row but the kept ones can be given (see `_give_rows`).
    admitted = tf.minimum(tf.shape(waiting)[0], layer.capacity - tf.shape(kept)[0])
    fresh = tf.cast(layer._fresh_values(admitted), layer._embeddings.dtype)
    return StepLookup(step, unique, position, counts, rows, holds, waiting[:admitted],
                      start_counts[:admitted], kept, fresh)


def admit(layer, found):
    """The second half of a training step (after `look_up`): gives rows to
    the keys to admit, takes them from others, and updates the map, the
    table's given rows, counts, clocks and figures. Returns the row of each
    of `found.unique` (-1: none)."""
    step, rows, kept = found.step, found.rows, found.kept
    new_keys = tf.gather(found.unique, found.admitting)
    # Seen now, before any row is taken: their place in the LRU order moves.
    layer._last_seen.value.scatter_update(tf.IndexedSlices(
        tf.fill(tf.shape(kept), tf.cast(tf.minimum(step, _INT32_MAX - 1), tf.int32)), kept))
    given, unused = _give_rows(layer, new_keys, kept, step)
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
    layer._embeddings.value.scatter_update(tf.IndexedSlices(found.fresh, given))
    layer._fresh.scatter_update(tf.IndexedSlices(tf.ones_like(given, tf.bool), given))
    admitting = found.admitting[:, None]
    rows = tf.tensor_scatter_nd_update(rows, admitting, given)
    # Counts and clocks of every key holding a row now.
    holding = tf.where(rows >= 0)[:, 0]
    holding_rows = tf.gather(rows, holding)
    was_held = tf.gather(found.holds, holding)
    old_counts = tf.cast(tf.gather(layer._counts.value, holding_rows), tf.int64)
    new_counts = tf.gather(found.counts, holding) + tf.where(was_held, old_counts, 0)
    start = tf.scatter_nd(admitting, found.start_counts, tf.shape(found.counts))
    new_counts = tf.where(was_held, new_counts, tf.gather(start, holding))
    new_counts = tf.cast(tf.minimum(new_counts, _INT32_MAX - 1), tf.int32)
    layer._counts.value.scatter_update(tf.IndexedSlices(new_counts, holding_rows))
    # The rows held before were marked seen above; the given ones now.
    last = tf.fill(tf.shape(given), tf.cast(tf.minimum(step, _INT32_MAX - 1), tf.int32))
    layer._last_seen.value.scatter_update(tf.IndexedSlices(last, given))
    _record_figures(layer, step, tf.shape(given)[0], evicted, rows, found.counts)
    tf.cond(layer._key_map.needs_clearing(), lambda: rebuild_map(layer, step), lambda: tf.constant(0))
    layer._key_map.stamp.assign(layer._map_stamp.value.assign_add(1))
    return rows


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
    taken ones; and how many were unused. `look_up` chose no more keys than
    there are rows to give: all but `taken_rows`."""
    capacity = layer.capacity
    wanted = tf.shape(keys)[0]
    used = tf.cast(layer._rows_used.value, tf.int32)
    unused = tf.minimum(wanted, capacity - used)
    new_rows = used + tf.range(unused)
    to_evict = wanted - unused
    # Rows this batch holds, and the new ones, are never taken.
    kept = tf.concat([taken_rows, new_rows], 0)

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


def _record_figures(layer, step, admitted, evicted, rows, counts):
    """The step's figures: rows held, admitted, evicted, and the share of
    this batch's lookups that found no row (`rows` and `counts` of the
    distinct keys)."""
    used = tf.cast(layer._rows_used.value, tf.int64)
    if layer.ttl_steps is None:
        rows_held = used
    else:
        last = tf.cast(layer._last_seen.value[:tf.cast(used, tf.int32)], tf.int64)
        rows_held = tf.reduce_sum(tf.cast(step - last <= layer.ttl_steps, tf.int64))
    missed = tf.cast(tf.reduce_sum(tf.where(rows < 0, counts, 0)), tf.float32)
    lookups = tf.maximum(tf.cast(tf.reduce_sum(counts), tf.float32), 1.0)
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
