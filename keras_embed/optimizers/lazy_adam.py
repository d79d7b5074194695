"""`keras_embed.optimizers.LazyAdam`: Adam that updates only the rows a step looks up.

The gradient of an embedding lookup (`tf.gather`) is a `tf.IndexedSlices`:
the few rows a batch looked up, not the whole table. Keras 3's `Adam` turns
it into a dense table-sized tensor and updates every row of the table and of
both moment slots on every step, so a step costs as much as the vocabulary is
large. `LazyAdam` updates only the rows in the slices, so a step costs as much
as the batch is large; dense gradients get exactly `keras.optimizers.Adam`'s
update.
"""

import warnings

import keras
import tensorflow as tf
from keras import ops

from keras_embed.layers.table_reads import is_layer_variable
from keras_embed.layers.table_reads import mark_updated_by_rows
from keras_embed.optimizers.finite_steps import apply_if_finite
from keras_embed.optimizers.rows import gather_rows, map_values, summed_duplicates


@keras.saving.register_keras_serializable(package="keras_embed")
class LazyAdam(keras.optimizers.Optimizer):
    """Adam that updates only the rows of a table that a step looked up.

    For a sparse gradient (`tf.IndexedSlices`, what the lookup of
    `keras_embed.Embedding` and `keras.layers.Embedding` produces), the
    gradients of repeated ids are summed first, then only those rows of the
    variable and of its moment slots are updated, with Adam's formulas and
    bias correction at the optimizer's step count. Dense gradients get exactly
    `keras.optimizers.Adam`'s update, bit for bit.

    Lazy semantics, honestly: a row absent from a step keeps its value and
    its moments unchanged on that step. Dense Adam instead decays every row's
    moments every step and keeps moving rows whose first moment is not yet
    zero; so a row seen on every step gets Adam's numbers, and a rarely seen
    row moves less than under Adam. This is the trade made by TF Addons' and
    Keras 2 era `LazyAdam`s, and it usually trains embeddings as well.

    With stock `keras.layers.Embedding` the update is by rows too, but not
    the step: that layer reads its whole table (a dense read, then a
    gather), and after row writes TensorFlow copies the whole table on each
    dense read. Measured for issue 11 at B=256x200, D=64: 98 ms a step at 1M
    rows and 176 ms at 4M with the stock layer, 61 and 42 ms with ours.
    LazyAdam warns once when it writes rows of a table read by a layer that
    is not ours; `keras_embed.swap(model)` switches the model to ours.

    A step whose gradients are not all finite is skipped: no weight, slot or
    step count changes (see `keras_embed.optimizers.finite_steps`). Under
    `jit_compile=True` a bad id gets NaN rows, and one step of a stock
    optimizer would make every weight NaN.

    Other options, applied to a sparse gradient:

    - `weight_decay`: decoupled, as in Keras (`w -= w * weight_decay * lr`
      before the Adam step), but lazily too: only the looked-up rows decay.
      Dense gradients decay the whole variable, as Keras does.
    - `clipnorm`, `global_clipnorm`, `clipvalue`: applied after duplicate ids
      are summed, so they see the same norms and values as the dense gradient
      would have.
    - `loss_scale_factor` and `keras.optimizers.LossScaleOptimizer`: the
      gradient stays sparse. (`LossScaleOptimizer`'s finiteness check makes a
      table-sized boolean tensor each step, a small cost next to dense Adam.)
    - `use_ema`, and the table's `embeddings_constraint` and
      `embeddings_regularizer`, cost a pass over the whole table per step:
      Keras averages and constrains whole variables, and a regularizer's
      gradient is dense, which makes the table's gradient dense (the step is
      then dense Adam's). Prefer an activity regularizer or weight decay.
    - `gradient_accumulation_steps`: works, but Keras accumulates into dense
      table-sized buffers, so the accumulated gradient is dense and the update
      is dense Adam's.

    Example:

    >>> import keras, numpy as np
    >>> import keras_embed
    >>> model = keras.Sequential([
    ...     keras_embed.Embedding(100_000, 16),
    ...     keras.layers.GlobalAveragePooling1D(),
    ...     keras.layers.Dense(1),
    ... ])
    >>> model.compile(keras_embed.optimizers.LazyAdam(0.01), "mse")
    >>> ids = np.random.randint(100_000, size=(32, 10))
    >>> history = model.fit(ids, np.random.rand(32), verbose=0)

    Args:
        learning_rate: A float, a
            `keras.optimizers.schedules.LearningRateSchedule`, or a callable
            that takes no arguments and returns the value to use. Defaults to
            `0.001`.
        beta_1: The exponential decay rate for the first moment estimates.
            Defaults to `0.9`.
        beta_2: The exponential decay rate for the second moment estimates.
            Defaults to `0.999`.
        epsilon: A small constant for numerical stability ("epsilon hat" in
            Kingma and Ba's paper). Defaults to `1e-7`.
        amsgrad: Boolean. Whether to apply the AMSGrad variant (the maximum of
            past second moments, kept per row). Defaults to `False`.
        weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema,
        ema_momentum, ema_overwrite_frequency, loss_scale_factor,
        gradient_accumulation_steps, name: as for every
            `keras.optimizers.Optimizer`; see above for their cost and meaning
            with sparse gradients.
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        amsgrad=False,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name=None,
        **kwargs,
    ):
        for arg, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            if isinstance(value, (int, float)) and not 0 <= value < 1:
                raise ValueError(
                    f"LazyAdam: `{arg}` must be in [0, 1): it is the decay "
                    f"rate of a moving average. Received: {arg}={value!r}."
                )
        if isinstance(epsilon, (int, float)) and epsilon < 0:
            raise ValueError(
                "LazyAdam: `epsilon` must be >= 0. "
                f"Received: epsilon={epsilon!r}."
            )
        super().__init__(
            learning_rate=learning_rate,
            name=name,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            **kwargs,
        )
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.amsgrad = amsgrad

    def build(self, var_list):
        """Creates the moment slots: `momentum`, `velocity` (and
        `velocity_hat` with `amsgrad`) for each variable, in Adam's order."""
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities, self._velocity_hats = [], [], []
        for variable in var_list:
            mark_updated_by_rows(variable)
            # Keras assigns `overwrite_with_gradient` variables their
            # gradient: they need no slots.
            needs_slots = not getattr(variable, "overwrite_with_gradient", False)
            self._momentums.append(
                self.add_variable_from_reference(variable, "momentum")
                if needs_slots else None
            )
            self._velocities.append(
                self.add_variable_from_reference(variable, "velocity")
                if needs_slots else None
            )
        if self.amsgrad:
            self._velocity_hats = [
                self.add_variable_from_reference(variable, "velocity_hat")
                if not getattr(variable, "overwrite_with_gradient", False)
                else None
                for variable in var_list
            ]

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
        momentum = self._momentums[index]
        velocity = self._velocities[index]
        velocity_hat = self._velocity_hats[index] if self.amsgrad else None
        lr = ops.cast(learning_rate, variable.dtype)
        local_step = ops.cast(self.iterations + 1, variable.dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, variable.dtype), local_step)
        beta_2_power = ops.power(ops.cast(self.beta_2, variable.dtype), local_step)
        alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        decay = None
        if self.weight_decay is not None and self._use_weight_decay(variable):
            decay = ops.cast(self.weight_decay, variable.dtype)
        if isinstance(gradient, tf.IndexedSlices):
            self._warn_if_read_densely(self._trainable_variables[index])
            # `apply` summed each replica's repeated ids; with several
            # replicas, the all-reduce between `apply` and here joins their
            # rows, so an id looked up on two replicas comes twice.
            if tf.distribute.get_strategy().num_replicas_in_sync > 1:
                gradient = summed_duplicates(gradient)
            self._sparse_update(
                gradient, variable, momentum, velocity, velocity_hat, alpha,
                lr, decay,
            )
            return
        gradient = ops.cast(gradient, variable.dtype)
        if decay is not None:
            self.assign_sub(variable, variable * decay * lr)
        # Adam's update, in keras.optimizers.Adam's order of operations, so
        # that the float rounding, and hence every number, is the same.
        self.assign_add(
            momentum,
            ops.multiply(ops.subtract(gradient, momentum), 1 - self.beta_1),
        )
        self.assign_add(
            velocity,
            ops.multiply(
                ops.subtract(ops.square(gradient), velocity), 1 - self.beta_2
            ),
        )
        if velocity_hat is not None:
            self.assign(velocity_hat, ops.maximum(velocity_hat, velocity))
            velocity = velocity_hat
        self.assign_sub(
            variable,
            ops.divide(
                ops.multiply(momentum, alpha),
                ops.add(ops.sqrt(velocity), self.epsilon),
            ),
        )

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
            f"LazyAdam updates rows of '{variable.path}', but its layer reads "
            "it densely: after row updates TensorFlow copies the whole table "
            "on each such read, so a step costs as much as the table is "
            "large, not the batch. keras_embed.Embedding reads only the rows "
            "it looks up: `model = keras_embed.swap(model)` switches the "
            "model's keras.layers.Embedding layers to it.",
            stacklevel=2,
        )

    def _sparse_update(
        self, gradient, variable, momentum, velocity, velocity_hat, alpha, lr,
        decay,
    ):
        """Adam on the rows `gradient.indices` (unique) only."""
        rows = gradient.indices
        grad = ops.cast(gradient.values, variable.dtype)
        momentum_rows = gather_rows(momentum, rows)
        momentum_rows = momentum_rows + ops.multiply(
            ops.subtract(grad, momentum_rows), 1 - self.beta_1
        )
        velocity_rows = gather_rows(velocity, rows)
        velocity_rows = velocity_rows + ops.multiply(
            ops.subtract(ops.square(grad), velocity_rows), 1 - self.beta_2
        )
        self.assign(momentum, tf.IndexedSlices(momentum_rows, rows))
        self.assign(velocity, tf.IndexedSlices(velocity_rows, rows))
        if velocity_hat is not None:
            velocity_rows = ops.maximum(gather_rows(velocity_hat, rows), velocity_rows)
            self.assign(velocity_hat, tf.IndexedSlices(velocity_rows, rows))
        step = ops.divide(
            ops.multiply(momentum_rows, alpha),
            ops.add(ops.sqrt(velocity_rows), self.epsilon),
        )
        # Scatter-update of new rows, not scatter-sub of the step: TF's CPU
        # scatter-sub is several times slower than a gather plus an update.
        variable_rows = gather_rows(variable, rows)
        if decay is not None:
            variable_rows = variable_rows - variable_rows * decay * lr
        self.assign(variable, tf.IndexedSlices(variable_rows - step, rows))

    def get_config(self):
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "amsgrad": self.amsgrad,
        }
