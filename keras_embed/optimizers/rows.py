"""What the row-sparse optimizers share: summing repeated ids, reading rows,
and `RowSparseOptimizer`, the base that updates only the rows a step
looked up.

The gradient of an embedding lookup (`tf.gather`) is a `tf.IndexedSlices`:
the few rows a batch looked up, not the whole table. Keras 3's optimizers
update every row of the table and of their slots on every step, so a step
costs as much as the vocabulary is large. A `RowSparseOptimizer` updates
only the rows in the slices, so a step costs as much as the batch is large,
and gives dense gradients its Keras counterpart's update.
"""

import warnings

import keras
import tensorflow as tf
from keras import ops

from keras_embed.layers.row_admission import fresh_rows
from keras_embed.layers.table_reads import is_layer_variable
from keras_embed.layers.table_reads import is_updated_by_rows
from keras_embed.layers.table_reads import mark_updated_by_rows
from keras_embed.layers.table_reads import retrace_with_row_reads
from keras_embed.optimizers.finite_steps import apply_if_finite


def summed_duplicates(slices):
    """Returns `slices` with one row per id: the sum of that id's rows.

    Example:

    >>> import tensorflow as tf
    >>> slices = tf.IndexedSlices(tf.constant([[1.0], [2.0], [4.0]]),
    ...                           tf.constant([3, 0, 3]))
    >>> summed = summed_duplicates(slices)
    >>> summed.indices.numpy().tolist(), summed.values.numpy().tolist()
    ([3, 0], [[5.0], [2.0]])

    Args:
        slices: a `tf.IndexedSlices` of shape `(n, *row_shape)`.

    Returns:
        A `tf.IndexedSlices` whose ids are `slices.indices` without repeats,
        in order of first appearance.
    """
    ids, positions = tf.unique(slices.indices)
    values = tf.math.unsorted_segment_sum(
        slices.values, positions, tf.shape(ids)[0]
    )
    return tf.IndexedSlices(values, ids, slices.dense_shape)


# Variables of these dtypes are updated with float32 arithmetic, rounded
# once when stored: the rules' constants and small terms do not survive in
# 16 bits. In float16 `epsilon=1e-8` is 0 (a row with a zero gradient and
# accumulator divides 0 by 0: NaN) and the square of a gradient below ~2.4e-4
# is 0 (Adam then divides a momentum by `epsilon` alone: a step 1e4 times too
# large); in bfloat16 `beta_2=0.999` is 0.996 and `momentum=0.9` is 0.898. A
# guard on the division would stop the NaN but not make the step the rule's.
# The slots keep the variable's dtype (what is saved is unchanged).
LOW_PRECISION = (tf.float16, tf.bfloat16)


def arithmetic_dtype(dtype):
    """The dtype a variable of `dtype` is updated in: float32 for 16-bit
    floats, `dtype` otherwise."""
    dtype = tf.as_dtype(dtype)
    return tf.float32 if dtype in LOW_PRECISION else dtype


def gather_rows(variable, rows):
    """Rows of a variable, read without reading the whole variable, in its
    `arithmetic_dtype` (float32 for 16-bit floats)."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    values = tf.gather(variable, rows)
    return tf.cast(values, arithmetic_dtype(values.dtype))


def map_values(function, gradient):
    """`function(gradient)` for a tensor, or applied to a slices' values."""
    if gradient is None:
        return None
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(
            function(gradient.values), gradient.indices, gradient.dense_shape
        )
    return function(gradient)


class RowSparseOptimizer(keras.optimizers.Optimizer):
    """Base of the optimizers that update only the rows a step looked up.

    A subclass creates its slots in `build` (after calling this `build`,
    which marks each variable as written by rows, so that
    `keras_embed.Embedding` reads it by rows) and implements two methods:

    - `update_rows(index, rows, gradient, variable_rows, learning_rate)`:
      reads (with `slot_rows`) and writes the rows `rows` (unique ids) of
      its slots for variable number `index`, and returns the new
      `variable_rows`;
    - `update_dense(index, gradient, variable, learning_rate)`: the Keras
      optimizer's own update for a dense gradient.

    This base sums repeated ids (once per replica, in `apply`, and again
    after an all-reduce joined several replicas' rows), unscales
    `loss_scale_factor`, clips as Keras clips the dense gradient, and applies
    `weight_decay` lazily (only to the looked-up rows) before the update;
    then it writes the new rows with one scatter-update. A step whose
    gradients are not all finite is skipped: no weight, slot or step count
    changes (`keras_embed.optimizers.finite_steps`; under `jit_compile=True`
    a bad id gets NaN rows, and one step of a stock optimizer would make
    every weight NaN). It warns once when it writes rows of a table that a
    layer other than ours reads densely (stock `keras.layers.Embedding`).

    Example:

    >>> import keras_embed
    >>> optimizer = keras_embed.optimizers.Adagrad(0.1)
    >>> isinstance(optimizer, RowSparseOptimizer)
    True

    Args:
        **kwargs: the arguments of every `keras.optimizers.Optimizer`.
    """

    def build(self, var_list):
        """Marks the variables as written by rows; subclasses add slots."""
        super().build(var_list)
        newly_marked = [v for v in var_list if not is_updated_by_rows(v)]
        for variable in newly_marked:
            mark_updated_by_rows(variable)
        if newly_marked:  # Built in the step's first trace: trace it again.
            retrace_with_row_reads(self)

    def add_slot(self, variable, name, initializer="zeros", shape=None):
        """A slot for `variable` named as Keras names its slots, or `None`
        for a variable Keras assigns its gradient (it needs no slot)."""
        if getattr(variable, "overwrite_with_gradient", False):
            return None
        if shape is None:
            slot = self.add_variable_from_reference(variable, name, initializer)
        else:
            # A slot of another shape (row-wise accumulators): colocated with
            # the variable, as Keras's TensorFlow backend colocates its own.
            value = variable.value if isinstance(variable, keras.Variable) else variable
            with tf.distribute.get_strategy().extended.colocate_vars_with(value):
                slot = self.add_variable(
                    shape=shape,
                    initializer=initializer,
                    dtype=variable.dtype,
                    name=f"{_slot_prefix(variable)}_{name}",
                )
        if fresh_rows(variable) is not None:  # A DynamicEmbedding's table.
            slots = self.__dict__.setdefault("_slots_to_reset", {})
            slots.setdefault(id(variable), []).append((slot, keras.initializers.get(initializer)))
        return slot

    def _reset_fresh_rows(self, variable):
        """For a dense gradient: sets the slots' rows that a DynamicEmbedding
        gave to new keys to their initial values, before the update (a new
        key never inherits an old key's state). Row updates do it as they
        read the slots (`slot_rows`)."""
        slots = getattr(self, "_slots_to_reset", {}).get(id(variable), ())
        if not slots:
            return
        flags = fresh_rows(variable)
        rows = tf.cast(tf.where(flags)[:, 0], tf.int32)
        for slot, initializer in slots:
            shape = tf.concat([tf.shape(rows), slot.shape[1:]], 0)
            self.assign(slot, tf.IndexedSlices(initializer(shape, dtype=slot.dtype), rows))
        flags.assign(tf.zeros_like(flags))

    def slot_rows(self, slot, rows):
        """The rows `rows` of `slot`, as `update_rows` reads them: a row a
        DynamicEmbedding gave to a new key since its last update reads as
        the slot's initial value (so a new key never inherits an old key's
        state), in `arithmetic_dtype`."""
        values = gather_rows(slot, rows)
        fresh, initializers = self.__dict__.get("_fresh_now") or (None, {})
        if id(slot) not in initializers:
            return values
        initial = initializers[id(slot)]((1, *slot.shape[1:]), dtype=values.dtype)
        mask = tf.reshape(fresh, [-1] + [1] * (values.shape.rank - 1))
        return tf.where(mask, initial, values)

    def apply(self, grads, trainable_variables=None):
        """Applies `grads` (dense tensors or `tf.IndexedSlices`) to the
        variables, as `keras.optimizers.Optimizer.apply` does."""
        scale = self.loss_scale_factor
        # Keras unscales with `g / scale`, which `tf.IndexedSlices` lacks;
        # we unscale here, the same division, and hide the factor meanwhile.
        if scale is not None:
            grads = [map_values(lambda g: g / scale, g) for g in grads]
        # Repeated ids are summed once, here: clipping then sees exactly the
        # nonzero rows of the dense gradient, and `update_step` one row per id.
        grads = [
            summed_duplicates(g) if isinstance(g, tf.IndexedSlices) else g
            for g in grads
        ]
        if not self.built and trainable_variables is not None:
            # Here, not in the step's `tf.cond`, where no variable can be made.
            self.build(list(trainable_variables))
        # A step whose gradients are not all finite (under XLA, a bad id's
        # NaN rows) changes nothing: see keras_embed.optimizers.finite_steps.
        apply_if_finite(self._apply_checked, grads, trainable_variables)
        return self.iterations

    def _apply_checked(self, grads, trainable_variables):
        scale = self.loss_scale_factor
        if scale is None:
            return super().apply(grads, trainable_variables)
        self.loss_scale_factor = None
        try:
            return super().apply(grads, trainable_variables)
        finally:
            self.loss_scale_factor = scale

    def _clip_gradients(self, grads):
        # Keras's clipping, applied to the values of the slices, which `apply`
        # made duplicate-free: norms and clipped values are the dense
        # gradient's.
        if not any(isinstance(g, tf.IndexedSlices) for g in grads):
            return super()._clip_gradients(grads)
        if not (self.clipnorm or self.global_clipnorm or self.clipvalue):
            return grads
        values = [
            g.values if isinstance(g, tf.IndexedSlices) else g for g in grads
        ]
        clipped = super()._clip_gradients(values)
        return [
            tf.IndexedSlices(c, g.indices, g.dense_shape)
            if isinstance(g, tf.IndexedSlices)
            else c
            for g, c in zip(grads, clipped)
        ]

    def _apply_weight_decay(self, variables):
        # Done in `update_step` instead, where we know which rows to decay.
        pass

    def update_step(self, gradient, variable, learning_rate):
        """Updates `variable` and its slots for one (dense or sparse) gradient."""
        index = self._get_variable_index(variable)
        # A 16-bit variable is updated in float32 (see LOW_PRECISION); a
        # scalar one (no rows) in its own dtype, as Keras updates it.
        dtype = arithmetic_dtype(variable.dtype) if variable.shape else variable.dtype
        lr = ops.cast(learning_rate, dtype)
        decay = None
        if self.weight_decay is not None and self._use_weight_decay(variable):
            decay = ops.cast(self.weight_decay, dtype)
        if dtype != variable.dtype and not isinstance(gradient, tf.IndexedSlices):
            # Its dense gradient: the rows' update, in float32, of all rows.
            rows = tf.range(variable.shape[0])
            new_rows = self._updated_rows(index, rows, gradient, variable, lr, decay)
            self.assign(variable, tf.cast(new_rows, variable.dtype))
            return
        if not isinstance(gradient, tf.IndexedSlices):
            self._reset_fresh_rows(self._trainable_variables[index])
            if decay is not None:
                self.assign_sub(variable, variable * decay * lr)
            self.update_dense(
                index, ops.cast(gradient, variable.dtype), variable, lr
            )
            return
        self._warn_if_read_densely(self._trainable_variables[index])
        # `apply` summed each replica's repeated ids; with several replicas,
        # the all-reduce between `apply` and here joins their rows, so an id
        # looked up on two replicas comes twice.
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            gradient = summed_duplicates(gradient)
        rows = gradient.indices
        new_rows = self._updated_rows(index, rows, gradient.values, variable, lr, decay)
        # A scatter-update of new rows, not a scatter-sub of the step: TF's
        # CPU scatter-sub is several times slower than a gather plus an update.
        self.assign(variable, tf.IndexedSlices(tf.cast(new_rows, variable.dtype), rows))

    def _updated_rows(self, index, rows, gradient, variable, lr, decay):
        """The new rows `rows` (unique) of `variable` for their `gradient`,
        weight decay first, in `arithmetic_dtype`; updates the slots' rows."""
        variable_rows = gather_rows(variable, rows)
        if decay is not None:
            variable_rows = variable_rows - variable_rows * decay * lr
        table = self._trainable_variables[index]
        slots = getattr(self, "_slots_to_reset", {}).get(id(table), ())
        if slots:  # A DynamicEmbedding's: `slot_rows` resets the fresh rows.
            flags = fresh_rows(table)
            # Set in __dict__: not a tracked attribute (the optimizer's are saved).
            self.__dict__["_fresh_now"] = (tf.gather(flags, rows), {id(slot): init for slot, init in slots})
        try:
            new_rows = self.update_rows(
                index, rows, ops.cast(gradient, variable_rows.dtype), variable_rows, lr
            )
        finally:
            self.__dict__["_fresh_now"] = None
        if slots:
            flags.scatter_update(tf.IndexedSlices(tf.zeros_like(rows, tf.bool), rows))
        return new_rows

    def _warn_if_read_densely(self, variable):
        """Once per optimizer, at trace time: a row-written table read whole
        (the table of `keras.layers.Embedding` or a subclass: a Keras
        variable named "embeddings" that no keras_embed layer owns)."""
        if (
            is_layer_variable(variable)
            or not isinstance(variable, keras.Variable)
            or variable.name != "embeddings"
            or getattr(self, "_warned_dense_read", False)
        ):
            return
        self._warned_dense_read = True
        warnings.warn(
            f"{type(self).__name__} updates rows of '{variable.path}', but its "
            "layer reads it densely: after row updates TensorFlow copies the "
            "whole table on each such read, so a step costs as much as the "
            "table is large, not the batch. keras_embed.Embedding reads only "
            "the rows it looks up: `model = keras_embed.swap(model)` switches "
            "the model's keras.layers.Embedding layers to it.",
            stacklevel=2,
        )

    def update_rows(self, index, rows, gradient, variable_rows, learning_rate):
        """The new `variable_rows`; updates the slots' `rows`. Subclasses."""
        raise NotImplementedError

    def update_dense(self, index, gradient, variable, learning_rate):
        """The Keras optimizer's update for a dense gradient. Subclasses."""
        raise NotImplementedError

    def assign_rows(self, slot, rows, values):
        """Writes `values` into the rows `rows` of `slot`, in its dtype."""
        self.assign(slot, tf.IndexedSlices(tf.cast(values, slot.dtype), rows))


def _slot_prefix(variable):
    """The prefix Keras gives a variable's slots (`add_variable_from_reference`)."""
    if hasattr(variable, "path"):
        return variable.path.replace("/", "_")
    return str(variable.name).replace("/", "_").replace(":", "_")


def check_nonnegative(optimizer, **values):
    """Raises a `ValueError` naming the first negative number in `values`."""
    for name, value in values.items():
        if isinstance(value, (int, float)) and value < 0:
            raise ValueError(
                f"{optimizer}: `{name}` must be >= 0. "
                f"Received: {name}={value!r}."
            )
