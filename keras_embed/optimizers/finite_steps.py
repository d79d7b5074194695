"""Skipping an optimizer step whose gradients are not all finite.

Under XLA (`jit_compile=True`) the layer's id check cannot raise: a bad id
gets NaN rows, the loss is NaN and so is every gradient. One update with
them makes every weight NaN, and every later prediction too, on good ids as
well. `apply_if_finite` runs an optimizer's update only when every gradient
is finite, as `keras.optimizers.LossScaleOptimizer` does, so such a step
changes nothing: no weight, no slot, not the step count. Our optimizers
apply every step through it; stock Keras optimizers apply the NaN.

Cost: one `is_finite` reduction over each gradient's values (for a
`tf.IndexedSlices`, the rows looked up, not the table) and one `tf.cond`.

Example:

>>> import keras, numpy as np, tensorflow as tf
>>> variable = keras.Variable(np.ones(2, "float32"))
>>> def apply(grads):
...     variable.assign_sub(grads[0])
>>> bool(apply_if_finite(apply, [tf.constant([np.nan, 1.0])]))
False
>>> variable.numpy().tolist()
[1.0, 1.0]
>>> bool(apply_if_finite(apply, [tf.constant([0.5, 1.0])]))
True
>>> variable.numpy().tolist()
[0.5, 0.0]
"""

import tensorflow as tf


def all_finite(grads):
    """A scalar bool tensor: is every value of every gradient finite?

    Args:
        grads: a list of dense tensors, `tf.IndexedSlices` (their values are
            checked) and `None`s (skipped).
    """
    checks = [
        tf.reduce_all(tf.math.is_finite(
            g.values if isinstance(g, tf.IndexedSlices) else g
        ))
        for g in grads
        if g is not None
    ]
    if not checks:
        return tf.constant(True)
    return tf.reduce_all(tf.stack(checks))


def apply_if_finite(apply, grads, *args):
    """Calls `apply(grads, *args)` only if every gradient is finite.

    In eager calls a Python `if`; in graphs (`tf.function`, `fit`, XLA) a
    `tf.cond`. Under a `tf.distribute` strategy that uses `merge_call`
    (`MirroredStrategy`), the test and the `tf.cond` run in cross-replica
    context, as `LossScaleOptimizer` does it, and the step is skipped on
    every replica if any replica's gradients are not finite.

    Args:
        apply: the optimizer's update, `apply(grads, *args)`; it must create
            no variables (build the optimizer first).
        grads: the gradients, as for `all_finite`.
        *args: passed on to `apply` (e.g. the trainable variables).

    Returns:
        The scalar bool: whether the step was applied.
    """
    if tf.executing_eagerly():
        finite = all_finite(grads)
        if bool(finite):
            apply(grads, *args)
        return finite
    if tf.distribute.in_cross_replica_context() or (
        tf.__internal__.distribute.strategy_supports_no_merge_call()
    ):
        return _cond(all_finite(grads), lambda: apply(grads, *args))

    def cross_replica(distribution, grads, *args):
        per_replica = distribution.extended.call_for_each_replica(
            all_finite, args=(grads,)
        )
        finite = tf.reduce_all(tf.stack(
            distribution.experimental_local_results(per_replica)
        ))

        def run():
            distribution.extended.call_for_each_replica(apply, args=(grads, *args))

        # A branch that calls `merge_call` (the optimizer's update does) must
        # run in cross-replica context, as here.
        return _cond(finite, run)

    return tf.distribute.get_replica_context().merge_call(
        cross_replica, args=(grads, *args)
    )


def _cond(finite, run):
    def applied():
        run()
        return tf.constant(True)

    return tf.cond(finite, applied, lambda: tf.constant(False))
