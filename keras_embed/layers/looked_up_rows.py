"""`keras_embed.LookedUpRowsRegularizer`: a table regularizer applied to the
rows a batch looks up, not to the whole table."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_embed")
class LookedUpRowsRegularizer(keras.regularizers.Regularizer):
    """Regularizes only the rows of a table that a batch looks up.

    Give it as `keras_embed.Embedding`'s `embeddings_regularizer`, wrapping
    any Keras regularizer:

    - Stock (`embeddings_regularizer=keras.regularizers.l2(1e-6)`): each step
      adds `l2(1e-6)(whole table)` to the loss. Its gradient is dense, so the
      table's gradient is dense, and every optimizer (`LazyAdam` included)
      reads and writes the whole table on every step.
    - `LookedUpRowsRegularizer(keras.regularizers.l2(1e-6))`: each step adds
      the wrapped regularizer of the rows the batch looks up, each distinct
      row counted once however often it repeats. Those rows get the same
      penalty gradient as under stock; the other rows get none that step. So
      the gradient stays sparse and the step costs as much as the batch. The
      loss reported is smaller than stock's (it omits the rows not looked up).

    This is the usual practice in recommender code. Stock's behaviour stays
    the default; this one is chosen explicitly, and is saved with the model
    (`keras_embed>LookedUpRowsRegularizer` in the layer's config). Called
    directly on a tensor (outside the layer), it is the wrapped regularizer.

    Example:

    >>> import keras, numpy as np
    >>> import keras_embed
    >>> layer = keras_embed.Embedding(
    ...     1000, 4, embeddings_initializer="ones",
    ...     embeddings_regularizer=keras_embed.LookedUpRowsRegularizer(
    ...         keras.regularizers.l2(0.01)))
    >>> _ = layer(np.array([[3, 3, 7]]))
    >>> [round(float(loss), 6) for loss in layer.losses]  # 2 rows x 4 x 0.01
    [0.08]

    Args:
        regularizer: a `keras.regularizers.Regularizer`, or anything
            `keras.regularizers.get` accepts (`"l2"`, a config dict).
    """

    def __init__(self, regularizer):
        message = (
            "LookedUpRowsRegularizer: `regularizer` must be a Keras "
            "regularizer to apply to the looked-up rows, such as "
            f"keras.regularizers.l2(1e-6). Received: regularizer={regularizer!r}."
        )
        try:
            inner = keras.regularizers.get(regularizer)
        except (ValueError, TypeError) as error:
            raise ValueError(message) from error
        if inner is None or isinstance(inner, LookedUpRowsRegularizer):
            raise ValueError(message)
        self.regularizer = inner

    def __call__(self, x):
        return self.regularizer(x)

    def rows_penalty(self, table, ids, padding=None):
        """The wrapped regularizer of the distinct rows of `table` at `ids`.

        Args:
            table: the table variable, or a function of 1-D ids returning
                their rows (how the layer reads its table).
            ids: integer ids of any shape (a dense tensor).
            padding: an id to leave out (`EmbeddingBag(mask_zero=True)`'s
                0, which XLA looks up and masks after), or `None`.
        """
        flat = tf.reshape(ids, [-1])
        if padding is not None:
            # In a fixed shape, as XLA needs: each padding id becomes the
            # first other id, which tf.unique then counts once. With no
            # other id (the candidate appended), the penalty is 0.
            other = tf.not_equal(flat, padding)
            first = tf.argmax(tf.concat([tf.cast(other, tf.int32), [1]], 0))
            first = tf.gather(tf.concat([flat, [padding]], 0), first)
            flat = tf.where(other, flat, first)
        distinct, _ = tf.unique(flat)
        rows = table(distinct) if callable(table) else tf.gather(table, distinct)
        penalty = self.regularizer(rows)
        if padding is not None:
            penalty = tf.where(tf.reduce_any(other), penalty, tf.zeros_like(penalty))
        return penalty

    def get_config(self):
        return {"regularizer": keras.regularizers.serialize(self.regularizer)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
