"""How a layer reads its table: densely, or by rows.

Which read is cheap depends on how the optimizer writes the table, so the
optimizer says (`mark_updated_by_rows`), and the layer asks
(`is_updated_by_rows`). Both live here, in the layers' wing, because layers
must not import optimizers; `keras_embed.optimizers` re-exports them.
"""

# TensorFlow keeps a variable's buffer in place for reads and updates of one
# kind: once rows of it have been written with a scatter (or read with a
# sparse gather), every dense read and every dense update copies the whole
# variable first, and stays so. An embedding table should be read by rows when
# its optimizer writes it by rows (as LazyAdam does) and densely otherwise.
_UPDATED_BY_ROWS = "_keras_embed_updated_by_rows"


def mark_updated_by_rows(variable):
    """Marks `variable` as written row by row by its optimizer.

    `keras_embed.Embedding` then looks rows up with a sparse read of the
    variable (a `ResourceGather`), which does not copy the table. `LazyAdam`
    marks its variables when it is built: before the first trace of the
    training step in `fit`; in a custom `tf.function` loop, call
    `optimizer.build(model.trainable_variables)` before the first step.
    Mark by hand a table trained by another optimizer that writes rows, such
    as `keras.optimizers.SGD` without momentum.

    Example:

    >>> import keras_embed
    >>> from keras_embed.optimizers import mark_updated_by_rows, is_updated_by_rows
    >>> layer = keras_embed.Embedding(1000, 8)
    >>> layer.build()
    >>> mark_updated_by_rows(layer.embeddings)
    >>> is_updated_by_rows(layer.embeddings)
    True

    Args:
        variable: a `keras.Variable`, the table, before the training step is
            traced.
    """
    setattr(variable, _UPDATED_BY_ROWS, True)


def is_updated_by_rows(variable):
    """Whether `mark_updated_by_rows(variable)` was called.

    Args:
        variable: a `tf.Variable` or Keras variable (a layer's table).
    """
    return getattr(variable, _UPDATED_BY_ROWS, False)


# Set on every variable of a keras_embed layer: LazyAdam warns when it
# writes rows of a variable without it (stock `keras.layers.Embedding`'s
# table, which that layer reads densely, copying it whole after row writes).
_OURS = "_keras_embed_layer_variable"


def mark_layer_variables(layer):
    """Marks each of `layer`'s variables (each shard of a sharded one) as
    read by a keras_embed layer, which reads a row-written table by rows."""
    for variable in layer.weights:
        setattr(variable, _OURS, True)
        inner = getattr(variable, "value", None)
        for shard in getattr(inner, "variables", ()):  # ShardedVariable
            setattr(shard, _OURS, True)


def is_layer_variable(variable):
    """Whether `mark_layer_variables` marked `variable`."""
    return getattr(variable, _OURS, False)
