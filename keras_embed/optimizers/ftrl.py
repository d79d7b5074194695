"""`keras_embed.optimizers.Ftrl`: FTRL-Proximal that updates only the rows a
step looks up."""

import keras
from keras import ops

from keras_embed.optimizers.rows import RowSparseOptimizer


@keras.saving.register_keras_serializable(package="keras_embed")
class Ftrl(RowSparseOptimizer):
    """FTRL-Proximal that updates only the rows of a table a step looked up.

    `keras.optimizers.Ftrl`'s arguments, defaults, slots (`accumulator`,
    `linear`) and update (McMahan et al., "Ad Click Prediction: a View from
    the Trenches", 2013), with `p = learning_rate_power` and
    `l2 = l2_regularization_strength + beta / (2 * learning_rate)`:

    ```text
    g_shrunk = g + 2 * l2_shrinkage_regularization_strength * w
    new_accumulator = accumulator + g ** 2
    linear += g_shrunk - (new_accumulator ** -p - accumulator ** -p) / lr * w
    quadratic = new_accumulator ** -p / lr + 2 * l2
    w = (clip(linear, -l1, l1) - linear) / quadratic
    accumulator = new_accumulator
    ```

    Dense gradients get exactly Keras's numbers. For a sparse gradient
    (`tf.IndexedSlices`, an embedding lookup's) repeated ids are summed
    first, then only the looked-up rows are updated, with the same
    operations. Where this differs from Keras's dense update, precisely:

    - A row with no gradient whose `linear` is still 0 (never updated) is
      set by the dense update to its closed form, `(clip(0) - 0) / quadratic
      = 0`: dense FTRL zeroes every row of the table on its first step. Here
      a row keeps its initial value until it is first looked up.
    - Once a row has been updated, a step with no gradient leaves it
      unchanged under the dense update too (same `linear`, same
      `quadratic`, same result), so it gets the same numbers here unless:
      `l2_shrinkage_regularization_strength > 0` (the dense update shrinks
      every row each step; here only the looked-up ones), or a learning-rate
      schedule or `beta > 0` with a changing learning rate (the dense update
      recomputes every row with the new `quadratic`).

    Example:

    >>> import keras, numpy as np
    >>> import keras_embed
    >>> model = keras.Sequential([
    ...     keras_embed.Embedding(100_000, 16),
    ...     keras.layers.GlobalAveragePooling1D(),
    ...     keras.layers.Dense(1),
    ... ])
    >>> model.compile(keras_embed.optimizers.Ftrl(0.05), "mse")
    >>> ids = np.random.randint(100_000, size=(32, 10))
    >>> history = model.fit(ids, np.random.rand(32), verbose=0)

    Args:
        learning_rate: A float, a
            `keras.optimizers.schedules.LearningRateSchedule`, or a callable
            that takes no arguments and returns the value to use. Defaults to
            `0.001`.
        learning_rate_power: A float <= 0: how the learning rate decreases
            during training. Use zero for a fixed learning rate. Defaults to
            `-0.5`.
        initial_accumulator_value: The accumulators' starting value; zero or
            positive. Defaults to `0.1`.
        l1_regularization_strength: A float >= 0. Defaults to `0.0`.
        l2_regularization_strength: A float >= 0 (a stabilizing penalty).
            Defaults to `0.0`.
        l2_shrinkage_regularization_strength: A float >= 0 (a magnitude
            penalty, applied to the gradient). Defaults to `0.0`.
        beta: A float: Keras's beta, added to the L2 term as
            `beta / (2 * learning_rate)`. Defaults to `0.0`.

    The other arguments, `weight_decay`, `clipnorm`, `clipvalue`,
    `global_clipnorm`, `use_ema`, `ema_momentum`,
    `ema_overwrite_frequency`, `loss_scale_factor`,
    `gradient_accumulation_steps` and `name`, are as for every
    `keras.optimizers.Optimizer`; `weight_decay` decays only the looked-up
    rows.
    """

    def __init__(
        self,
        learning_rate=0.001,
        learning_rate_power=-0.5,
        initial_accumulator_value=0.1,
        l1_regularization_strength=0.0,
        l2_regularization_strength=0.0,
        l2_shrinkage_regularization_strength=0.0,
        beta=0.0,
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
        for argument, value in (
            ("initial_accumulator_value", initial_accumulator_value),
            ("l1_regularization_strength", l1_regularization_strength),
            ("l2_regularization_strength", l2_regularization_strength),
            ("l2_shrinkage_regularization_strength",
             l2_shrinkage_regularization_strength),
        ):
            if value < 0:
                raise ValueError(
                    f"Ftrl: `{argument}` must be >= 0. "
                    f"Received: {argument}={value!r}."
                )
        if learning_rate_power > 0:
            raise ValueError(
                "Ftrl: `learning_rate_power` must be <= 0. "
                f"Received: learning_rate_power={learning_rate_power!r}."
            )
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            name=name,
            **kwargs,
        )
        self.learning_rate_power = learning_rate_power
        self.initial_accumulator_value = initial_accumulator_value
        self.l1_regularization_strength = l1_regularization_strength
        self.l2_regularization_strength = l2_regularization_strength
        self.l2_shrinkage_regularization_strength = (
            l2_shrinkage_regularization_strength
        )
        self.beta = beta

    def build(self, var_list):
        """Creates an `accumulator` and a `linear` slot per variable, in
        Keras's order."""
        if self.built:
            return
        super().build(var_list)
        initializer = keras.initializers.Constant(self.initial_accumulator_value)
        self._accumulators, self._linears = [], []
        for variable in var_list:
            self._accumulators.append(
                self.add_slot(variable, "accumulator", initializer)
            )
            self._linears.append(self.add_slot(variable, "linear"))

    def _ftrl(self, accumulator, linear, gradient, variable, lr):
        """Keras's FTRL step in Keras's order of operations: returns the new
        accumulator, the linear term's increment and a function of the new
        linear term giving the new variable."""
        power = self.learning_rate_power
        l2 = self.l2_regularization_strength + self.beta / (2.0 * lr)
        shrunk = ops.add(
            gradient,
            ops.multiply(2 * self.l2_shrinkage_regularization_strength, variable),
        )
        new_accumulator = ops.add(accumulator, ops.square(gradient))
        increment = ops.subtract(
            shrunk,
            ops.multiply(
                ops.divide(
                    ops.subtract(
                        ops.power(new_accumulator, -power),
                        ops.power(accumulator, -power),
                    ),
                    lr,
                ),
                variable,
            ),
        )
        quadratic = ops.add(
            ops.divide(ops.power(new_accumulator, -power), lr), 2 * l2
        )
        l1 = self.l1_regularization_strength

        def new_variable(new_linear):
            clipped = ops.clip(new_linear, -l1, l1)
            return ops.divide(ops.subtract(clipped, new_linear), quadratic)

        return new_accumulator, increment, new_variable

    def update_dense(self, index, gradient, variable, learning_rate):
        accumulator = self._accumulators[index]
        linear = self._linears[index]
        new_accumulator, increment, new_variable = self._ftrl(
            accumulator, linear, gradient, variable, learning_rate
        )
        self.assign_add(linear, increment)
        self.assign(variable, new_variable(linear))
        self.assign(accumulator, new_accumulator)

    def update_rows(self, index, rows, gradient, variable_rows, learning_rate):
        accumulator = self._accumulators[index]
        linear = self._linears[index]
        new_accumulator, increment, new_variable = self._ftrl(
            self.slot_rows(accumulator, rows), None, gradient, variable_rows,
            learning_rate,
        )
        new_linear = ops.add(self.slot_rows(linear, rows), increment)
        self.assign_rows(linear, rows, new_linear)
        self.assign_rows(accumulator, rows, new_accumulator)
        return new_variable(new_linear)

    def get_config(self):
        return {
            **super().get_config(),
            "learning_rate_power": self.learning_rate_power,
            "initial_accumulator_value": self.initial_accumulator_value,
            "l1_regularization_strength": self.l1_regularization_strength,
            "l2_regularization_strength": self.l2_regularization_strength,
            "l2_shrinkage_regularization_strength":
                self.l2_shrinkage_regularization_strength,
            "beta": self.beta,
        }
