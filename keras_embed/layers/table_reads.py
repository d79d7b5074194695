"""How a layer reads its table: densely, or by rows.

Which read is cheap depends on how the optimizer writes the table, so the
optimizer says (`mark_updated_by_rows`), and the layer asks
(`is_updated_by_rows`). Both live here, in the layers' wing, because layers
must not import optimizers; `keras_embed.optimizers` re-exports them.

Ours mark their variables when built. Keras's own optimizers say it by
writing rows: `install` makes their first row write of one of our tables
mark it (`keras.optimizers.SGD()` writes a `scatter_sub` of the gradient's
rows), so a user who keeps Keras's optimizer reads by rows too.
"""

import contextlib
import weakref

import tensorflow as tf

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
    Keras's own optimizers mark one of our tables at their first row write
    of it (`keras.optimizers.SGD` without momentum); mark by hand a table
    that another kind of optimizer (not a `keras.optimizers.Optimizer`)
    writes by rows.

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


# Keras's `fit` and `train_on_batch` trace the step's lookup before its
# first optimizer update (which builds the optimizer, without a strategy):
# a table marked during that trace was looked up with a dense read. A
# tf.function whose first trace created variables traces again, so marking
# there creates this scalar: the step is traced again, with row reads. It
# belongs to no model or optimizer's variables (nor to saved files): it
# holds nothing.
_RETRACE_VARIABLES = weakref.WeakKeyDictionary()


def retrace_with_row_reads(owner, device=None):
    """Creates a variable in the current trace, if any, which makes
    tf.function trace the step again (now with row reads of the tables just
    marked). Where the trace may not create one (not a function's first
    trace), the next trace reads by rows.

    Under a `tf.distribute` strategy the variable is one plain variable on
    `device` (the variable written): a mirrored one, made in an update of a
    traced step, reads its first copy's value in the trace, which fails.
    Under the parameter-server strategy (whose steps create no variables) no
    retrace is forced: the next trace reads by rows."""
    if not tf.inside_function() or isinstance(
        tf.distribute.get_strategy(), tf.distribute.experimental.ParameterServerStrategy
    ):
        return
    try:
        with _one_device_variables(device):
            _RETRACE_VARIABLES[owner] = tf.Variable(0, trainable=False, name="retrace")
    except ValueError:  # "tf.function only supports ... created on the first call"
        pass


def _one_device_variables(device):
    """A scope whose variables the current strategy (if any) does not mirror
    or place: its creators take `colocate_with=SingleDevice(device)` so."""
    if not tf.distribute.has_strategy():
        return contextlib.nullcontext()
    from tensorflow.python.distribute.numpy_dataset import SingleDevice

    single = SingleDevice(device or "/cpu:0")

    def creator(next_creator, **kwargs):
        kwargs["colocate_with"] = single
        return next_creator(**kwargs)

    return tf.variable_creator_scope(creator)


def _note_row_write(optimizer, variable):
    """Marks `variable` when it is (a replica or shard of) one of our tables
    that `optimizer` trains, at its first row write."""
    try:
        owner = optimizer._trainable_variables[optimizer._get_variable_index(variable)]
    except (AttributeError, KeyError, IndexError):  # A slot, not a trained variable.
        return
    if is_layer_variable(owner) and not is_updated_by_rows(owner):
        mark_updated_by_rows(owner)
        retrace_with_row_reads(optimizer, getattr(variable, "device", None))


def install():
    """Makes Keras's optimizers mark our tables at their first row write
    (`assign`, `assign_add` or `assign_sub` of a `tf.IndexedSlices`, which
    the TensorFlow backend writes with a scatter). Safe to call twice; if a
    future Keras moves these methods, Keras is left as it is (tables are
    then marked by our optimizers or by hand only)."""
    try:
        from keras.src.backend.tensorflow.optimizer import TFOptimizer
    except ImportError:
        return
    for name in ("assign", "assign_add", "assign_sub"):
        stock = getattr(TFOptimizer, name, None)
        if stock is None or getattr(stock, "_keras_embed_row_writes", False):
            continue
        setattr(TFOptimizer, name, _noting_row_writes(stock))


def _noting_row_writes(stock):
    def write(self, variable, value):
        if isinstance(value, tf.IndexedSlices):
            _note_row_write(self, variable)
        return stock(self, variable, value)

    write._keras_embed_row_writes = True
    write.__wrapped__ = stock
    write.__name__, write.__doc__ = stock.__name__, stock.__doc__
    return write
