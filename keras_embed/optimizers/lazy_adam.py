"""`keras_embed.optimizers.LazyAdam`: Adam that updates only the rows a step looks up.

The gradient of an embedding lookup (`tf.gather`) is a `tf.IndexedSlices`:
the few rows a batch looked up, not the whole table. Keras 3's `Adam` turns
it into a dense table-sized tensor and updates every row of the table and of
both moment slots on every step, so a step costs as much as the vocabulary is
large. `LazyAdam` updates only the rows in the slices, so a step costs as much
as the batch is large; dense gradients get exactly `keras.optimizers.Adam`'s
update.
"""

import keras
from keras import ops

from keras_embed.optimizers.rows import RowSparseOptimizer


@keras.saving.register_keras_serializable(package="keras_embed")
class LazyAdam(RowSparseOptimizer):
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
    dense read. Measured at B=256x200, D=64: 98 ms a step at 1M
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
      then dense Adam's). Prefer `keras_embed.LookedUpRowsRegularizer`
      (it regularizes only the looked-up rows) or weight decay.
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

    The other arguments, `weight_decay`, `clipnorm`, `clipvalue`,
    `global_clipnorm`, `use_ema`, `ema_momentum`,
    `ema_overwrite_frequency`, `loss_scale_factor`,
    `gradient_accumulation_steps` and `name`, are as for every
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
        super().build(var_list)  # marks the variables as written by rows
        self._momentums, self._velocities, self._velocity_hats = [], [], []
        for variable in var_list:
            self._momentums.append(self.add_slot(variable, "momentum"))
            self._velocities.append(self.add_slot(variable, "velocity"))
        if self.amsgrad:
            self._velocity_hats = [
                self.add_slot(variable, "velocity_hat") for variable in var_list
            ]

    def _alpha(self, dtype, learning_rate):
        """Adam's step size at this step, bias corrections included."""
        local_step = ops.cast(self.iterations + 1, dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, dtype), local_step)
        beta_2_power = ops.power(ops.cast(self.beta_2, dtype), local_step)
        return learning_rate * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)

    def update_dense(self, index, gradient, variable, learning_rate):
        """Adam's update, in keras.optimizers.Adam's order of operations, so
        that the float rounding, and hence every number, is the same."""
        momentum = self._momentums[index]
        velocity = self._velocities[index]
        alpha = self._alpha(variable.dtype, learning_rate)
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
        if self.amsgrad:
            velocity_hat = self._velocity_hats[index]
            self.assign(velocity_hat, ops.maximum(velocity_hat, velocity))
            velocity = velocity_hat
        self.assign_sub(
            variable,
            ops.divide(
                ops.multiply(momentum, alpha),
                ops.add(ops.sqrt(velocity), self.epsilon),
            ),
        )

    def update_rows(self, index, rows, gradient, variable_rows, learning_rate):
        """Adam on the rows `rows` (unique) only."""
        momentum = self._momentums[index]
        velocity = self._velocities[index]
        alpha = self._alpha(variable_rows.dtype, learning_rate)
        momentum_rows = self.slot_rows(momentum, rows)
        momentum_rows = momentum_rows + ops.multiply(
            ops.subtract(gradient, momentum_rows), 1 - self.beta_1
        )
        velocity_rows = self.slot_rows(velocity, rows)
        velocity_rows = velocity_rows + ops.multiply(
            ops.subtract(ops.square(gradient), velocity_rows), 1 - self.beta_2
        )
        self.assign_rows(momentum, rows, momentum_rows)
        self.assign_rows(velocity, rows, velocity_rows)
        if self.amsgrad:
            velocity_hat = self._velocity_hats[index]
            velocity_rows = ops.maximum(self.slot_rows(velocity_hat, rows), velocity_rows)
            self.assign_rows(velocity_hat, rows, velocity_rows)
        step = ops.divide(
            ops.multiply(momentum_rows, alpha),
            ops.add(ops.sqrt(velocity_rows), self.epsilon),
        )
        return variable_rows - step

    def get_config(self):
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "amsgrad": self.amsgrad,
        }
