"""`keras_embed.optimizers.Adagrad`: Adagrad that updates only the rows a
step looks up."""

import keras
from keras import ops

from keras_embed.optimizers.rows import RowSparseOptimizer
from keras_embed.optimizers.rows import check_nonnegative


@keras.saving.register_keras_serializable(package="keras_embed")
class Adagrad(RowSparseOptimizer):
    """Adagrad that updates only the rows of a table that a step looked up.

    `keras.optimizers.Adagrad`'s arguments, defaults and slot
    (`accumulator`, one value per weight). For each weight `w` with gradient
    `g`: `accumulator += g**2; w -= lr * g / sqrt(accumulator + epsilon)`.

    A row with no gradient does not change under Keras's dense update (its
    accumulator grows by 0 and it moves by 0), so updating only the
    looked-up rows gives the dense update's numbers: dense gradients and
    sparse ones (`tf.IndexedSlices`, what an embedding lookup produces) get
    the same operations in Keras's order, hence the same float32 results.
    Repeated ids are summed first, as the dense gradient sums them. (Keras's
    own sparse path instead squares each occurrence's row before adding it
    to the accumulator, which is not the dense update when an id repeats.)

    `weight_decay` decays only the looked-up rows (lazily, like
    `keras_embed.optimizers.LazyAdam`'s); the other options are every
    Keras optimizer's, with the costs `LazyAdam` states.

    Example:

    >>> import keras, numpy as np
    >>> import keras_embed
    >>> model = keras.Sequential([
    ...     keras_embed.Embedding(100_000, 16),
    ...     keras.layers.GlobalAveragePooling1D(),
    ...     keras.layers.Dense(1),
    ... ])
    >>> model.compile(keras_embed.optimizers.Adagrad(0.05), "mse")
    >>> ids = np.random.randint(100_000, size=(32, 10))
    >>> history = model.fit(ids, np.random.rand(32), verbose=0)

    Args:
        learning_rate: A float, a
            `keras.optimizers.schedules.LearningRateSchedule`, or a callable
            that takes no arguments and returns the value to use. Defaults to
            `0.001`.
        initial_accumulator_value: Floating point value. Starting value for
            the accumulators (per-weight sums of squared gradients). Must be
            non-negative. Defaults to `0.1`.
        epsilon: Small floating point value for numerical stability.
            Defaults to `1e-7`.

    The other arguments, `weight_decay`, `clipnorm`, `clipvalue`,
    `global_clipnorm`, `use_ema`, `ema_momentum`,
    `ema_overwrite_frequency`, `loss_scale_factor`,
    `gradient_accumulation_steps` and `name`, are as for every
    `keras.optimizers.Optimizer`.
    """

    def __init__(
        self,
        learning_rate=0.001,
        initial_accumulator_value=0.1,
        epsilon=1e-7,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name="adagrad",
        **kwargs,
    ):
        check_nonnegative(
            type(self).__name__,
            initial_accumulator_value=initial_accumulator_value,
            epsilon=epsilon,
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
        self.initial_accumulator_value = initial_accumulator_value
        self.epsilon = epsilon

    def build(self, var_list):
        """Creates one `accumulator` per variable, as Keras's Adagrad."""
        if self.built:
            return
        super().build(var_list)
        initializer = keras.initializers.Constant(self.initial_accumulator_value)
        self._accumulators = [
            self.add_slot(variable, "accumulator", initializer)
            for variable in var_list
        ]

    def update_dense(self, index, gradient, variable, learning_rate):
        accumulator = self._accumulators[index]
        self.assign_add(accumulator, ops.square(gradient))
        self.assign_sub(
            variable,
            ops.divide(
                ops.multiply(learning_rate, gradient),
                ops.sqrt(ops.add(accumulator, self.epsilon)),
            ),
        )

    def update_rows(self, index, rows, gradient, variable_rows, learning_rate):
        accumulator = self._accumulators[index]
        accumulated = ops.add(self.slot_rows(accumulator, rows), ops.square(gradient))
        self.assign_rows(accumulator, rows, accumulated)
        return ops.subtract(
            variable_rows,
            ops.divide(
                ops.multiply(learning_rate, gradient),
                ops.sqrt(ops.add(accumulated, self.epsilon)),
            ),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "initial_accumulator_value": self.initial_accumulator_value,
            "epsilon": self.epsilon,
        }
