"""`keras_embed.optimizers.SGD`: SGD (with or without momentum) that reads and
updates only the rows a step looks up."""

import keras
from keras import ops

from keras_embed.optimizers.rows import RowSparseOptimizer


@keras.saving.register_keras_serializable(package="keras_embed")
class SGD(RowSparseOptimizer):
    """Gradient descent, with momentum, that updates only the looked-up rows.

    `keras.optimizers.SGD`'s arguments, defaults, slot (`momentum`, created
    only when `momentum > 0`) and update, for a weight `w` with gradient `g`:

    ```text
    velocity = momentum * velocity - learning_rate * g
    w += velocity                                   # nesterov=False
    w += momentum * velocity - learning_rate * g    # nesterov=True
    ```

    and `w -= learning_rate * g` without momentum. Dense gradients get
    exactly Keras's numbers. For a sparse gradient (`tf.IndexedSlices`, an
    embedding lookup's) repeated ids are summed first, then only those rows
    and their velocity are updated.

    Without momentum that is the dense update's result too (a row with no
    gradient moves by 0). It marks the table as written by rows when built,
    so `keras_embed.Embedding` reads it by rows (`keras.optimizers.SGD`
    marks it at its first row write, then the step is traced again).

    With momentum the semantics are lazy, as `LazyAdam`'s: a row absent from
    a step keeps its value and its velocity on that step. Keras's dense SGD
    instead decays every row's velocity every step and keeps moving rows
    whose velocity is not zero; so a row seen on every step gets Keras's
    numbers, and a rarely seen row travels less after its last look-up (it
    stops rather than coasting). `weight_decay` decays only the looked-up
    rows.

    Example:

    >>> import keras, numpy as np
    >>> import keras_embed
    >>> model = keras.Sequential([
    ...     keras_embed.Embedding(100_000, 16),
    ...     keras.layers.GlobalAveragePooling1D(),
    ...     keras.layers.Dense(1),
    ... ])
    >>> model.compile(keras_embed.optimizers.SGD(0.1, momentum=0.9), "mse")
    >>> ids = np.random.randint(100_000, size=(32, 10))
    >>> history = model.fit(ids, np.random.rand(32), verbose=0)

    Args:
        learning_rate: A float, a
            `keras.optimizers.schedules.LearningRateSchedule`, or a callable
            that takes no arguments and returns the value to use. Defaults to
            `0.01`.
        momentum: A float in `[0, 1]`: how much of the previous velocity
            each step keeps. Defaults to `0.0`, plain gradient descent.
        nesterov: Boolean: whether to apply Nesterov momentum. Defaults to
            `False`.

    The other arguments, `weight_decay`, `clipnorm`, `clipvalue`,
    `global_clipnorm`, `use_ema`, `ema_momentum`,
    `ema_overwrite_frequency`, `loss_scale_factor`,
    `gradient_accumulation_steps` and `name`, are as for every
    `keras.optimizers.Optimizer`.
    """

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.0,
        nesterov=False,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name="SGD",
        **kwargs,
    ):
        if (
            isinstance(momentum, bool)
            or not isinstance(momentum, (int, float))
            or not 0 <= momentum <= 1
        ):
            raise ValueError(
                "SGD: `momentum` must be a number in [0, 1]. "
                f"Received: momentum={momentum!r}."
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
        self.momentum = float(momentum)
        self.nesterov = nesterov

    def build(self, variables):
        """Creates a `momentum` slot per variable when `momentum > 0`."""
        if self.built:
            return
        super().build(variables)
        self.momentums = []
        if self.momentum != 0:
            self.momentums = [
                self.add_slot(variable, "momentum") for variable in variables
            ]

    def _velocity(self, velocity, gradient, learning_rate, dtype):
        momentum = ops.cast(self.momentum, dtype)
        return ops.subtract(
            ops.multiply(velocity, momentum),
            ops.multiply(gradient, learning_rate),
        )

    def _move(self, velocity, gradient, learning_rate, dtype):
        if not self.nesterov:
            return velocity
        return self._velocity(velocity, gradient, learning_rate, dtype)

    def update_dense(self, index, gradient, variable, learning_rate):
        if self.momentum == 0:
            self.assign_sub(variable, ops.multiply(gradient, learning_rate))
            return
        velocity = self.momentums[index]
        self.assign(
            velocity,
            self._velocity(velocity, gradient, learning_rate, variable.dtype),
        )
        self.assign_add(
            variable, self._move(velocity, gradient, learning_rate, variable.dtype)
        )

    def update_rows(self, index, rows, gradient, variable_rows, learning_rate):
        if self.momentum == 0:
            return ops.subtract(
                variable_rows, ops.multiply(gradient, learning_rate)
            )
        velocity = self.momentums[index]
        dtype = variable_rows.dtype
        new_velocity = self._velocity(
            self.slot_rows(velocity, rows), gradient, learning_rate, dtype
        )
        self.assign_rows(velocity, rows, new_velocity)
        return ops.add(
            variable_rows, self._move(new_velocity, gradient, learning_rate, dtype)
        )

    def get_config(self):
        return {
            **super().get_config(),
            "momentum": self.momentum,
            "nesterov": self.nesterov,
        }
