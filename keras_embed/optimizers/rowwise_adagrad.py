"""`keras_embed.optimizers.RowWiseAdagrad`: Adagrad with one accumulator per
row of a table, updating only the rows a step looks up."""

import keras
from keras import ops

from keras_embed.optimizers.rows import RowSparseOptimizer
from keras_embed.optimizers.rows import check_nonnegative


@keras.saving.register_keras_serializable(package="keras_embed")
class RowWiseAdagrad(RowSparseOptimizer):
    """Adagrad with one accumulator per row: the mean squared gradient.

    For each row `w` (of shape `(D,)`) with gradient `g`, at every step:

    ```text
    accumulator += mean(g ** 2)                 # one float per row
    w -= learning_rate * g / (sqrt(accumulator) + epsilon)
    ```

    This is the exact row-wise Adagrad of FBGEMM's table-batched embeddings
    (fbgemm_gpu, `EmbOptimType.EXACT_ROWWISE_ADAGRAD`, which TorchRec uses),
    with FBGEMM's defaults for `initial_accumulator_value` (0) and `epsilon`
    (1e-8); TorchRec's `torchrec.optim.RowWiseAdagrad` is the same update
    for dense tensors. Its slot,
    `accumulator`, has one float per row: `4 bytes x rows` instead of
    Adagrad's `4 bytes x rows x D`. A 1-D variable (a bias) has one row per
    value, which makes the update Adagrad's with `epsilon` outside the root;
    a variable of rank 3 or more has one accumulator per index of its first
    axis.

    Only the looked-up rows move; a row with no gradient would not move under
    the dense update either (its accumulator grows by 0), so dense and sparse
    gradients give the same numbers. Repeated ids are summed first.
    `weight_decay` decays only the looked-up rows.

    Example:

    >>> import keras, numpy as np
    >>> import keras_embed
    >>> model = keras.Sequential([
    ...     keras_embed.Embedding(100_000, 16),
    ...     keras.layers.GlobalAveragePooling1D(),
    ...     keras.layers.Dense(1),
    ... ])
    >>> optimizer = keras_embed.optimizers.RowWiseAdagrad(0.05)
    >>> model.compile(optimizer, "mse")
    >>> ids = np.random.randint(100_000, size=(32, 10))
    >>> history = model.fit(ids, np.random.rand(32), verbose=0)
    >>> tuple(optimizer.variables[2].shape)  # the table's accumulator
    (100000,)

    Args:
        learning_rate: A float, a
            `keras.optimizers.schedules.LearningRateSchedule`, or a callable
            that takes no arguments and returns the value to use. Defaults to
            `0.001`.
        initial_accumulator_value: Non-negative float: the accumulators'
            starting value. Defaults to `0.0`.
        epsilon: Small non-negative float added to the root. Defaults to
            `1e-8`.

    The other arguments, `weight_decay`, `clipnorm`, `clipvalue`,
    `global_clipnorm`, `use_ema`, `ema_momentum`,
    `ema_overwrite_frequency`, `loss_scale_factor`,
    `gradient_accumulation_steps` and `name`, are as for every
    `keras.optimizers.Optimizer`.
    """

    def __init__(
        self,
        learning_rate=0.001,
        initial_accumulator_value=0.0,
        epsilon=1e-8,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name="rowwise_adagrad",
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
        """Creates one `accumulator` per variable: one float per row."""
        if self.built:
            return
        super().build(var_list)
        initializer = keras.initializers.Constant(self.initial_accumulator_value)
        self._accumulators = [
            self.add_slot(
                variable, "accumulator", initializer, shape=tuple(variable.shape[:1])
            )
            for variable in var_list
        ]

    def _step(self, accumulated, gradient, learning_rate):
        """`learning_rate * gradient / (sqrt(accumulated) + epsilon)`, the
        per-row `accumulated` broadcast along each row."""
        scale = ops.divide(
            learning_rate, ops.add(ops.sqrt(accumulated), self.epsilon)
        )
        rank = len(gradient.shape)
        if rank > 1:
            scale = ops.reshape(scale, (-1,) + (1,) * (rank - 1))
        return ops.multiply(scale, gradient)

    @staticmethod
    def _mean_square(gradient):
        """The mean of `gradient ** 2` over each row (all axes but the first)."""
        squared = ops.square(gradient)
        rank = len(gradient.shape)
        if rank <= 1:
            return squared
        return ops.mean(squared, axis=tuple(range(1, rank)))

    def update_dense(self, index, gradient, variable, learning_rate):
        accumulator = self._accumulators[index]
        self.assign_add(accumulator, self._mean_square(gradient))
        self.assign_sub(variable, self._step(accumulator, gradient, learning_rate))

    def update_rows(self, index, rows, gradient, variable_rows, learning_rate):
        accumulator = self._accumulators[index]
        accumulated = ops.add(
            self.slot_rows(accumulator, rows), self._mean_square(gradient)
        )
        self.assign_rows(accumulator, rows, accumulated)
        return ops.subtract(
            variable_rows, self._step(accumulated, gradient, learning_rate)
        )

    def get_config(self):
        return {
            **super().get_config(),
            "initial_accumulator_value": self.initial_accumulator_value,
            "epsilon": self.epsilon,
        }
