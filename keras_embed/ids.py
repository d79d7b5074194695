"""What an id is: checks that turn bad ids into clear errors.

Stock Keras wraps negative ids to the last rows, truncates 1.7 to 1, accepts
booleans, and on GPU looks up zeros for ids >= input_dim. `checked` refuses
each of these, in eager calls and in graphs alike (`tf.function`, `fit`,
`predict`, exported SavedModels), on every device: in a graph the check is an
op (`tf.debugging.Assert`), not a Python `if`, so it travels with the graph.

Cost: one min and one max reduction over the ids (plus a whole-number test
for float ids), against a gather that writes `output_dim` values per id.

Under XLA (`jit_compile=True`) TensorFlow drops `Assert` ops, and XLA's gather
clamps out-of-range ids to the nearest row: there a bad id looks up row 0 or
row `input_dim - 1` with no error (README, "Errors you may see").
"""

import numpy as np
import tensorflow as tf

_STRING_HINT = (
    " To look up words or other strings, map them to ids first with "
    "`keras.layers.StringLookup` or `keras.layers.TextVectorization`."
)


def checked(ids, input_dim, layer_name):
    """Returns `ids` as int32/int64, after checking every id is valid.

    Args:
        ids: a dense, `tf.SparseTensor` or `tf.RaggedTensor` of ids: integers,
            or floats holding whole numbers.
        input_dim: ids must lie in `[0, input_dim)`.
        layer_name: named in the errors.

    Raises:
        TypeError: for string, boolean or complex ids.
        tf.errors.InvalidArgumentError: for an id outside `[0, input_dim)` or
            a float id that is not a whole number: at once in eager calls,
            when the graph runs otherwise. The message names the layer, the
            first bad id and the valid range.
    """
    dtype = tf.as_dtype(ids.dtype)
    if not (dtype.is_integer or dtype.is_floating):
        hint = _STRING_HINT if dtype == tf.string else ""
        raise complete_error(TypeError(
            f"Embedding layer '{layer_name}' received ids of dtype "
            f"{dtype.name}; ids must be integers in [0, input_dim) = "
            f"[0, {input_dim}).{hint}"
        ))
    is_composite = isinstance(ids, (tf.SparseTensor, tf.RaggedTensor))
    values = ids.values if is_composite else ids
    if tf.executing_eagerly():
        _check_now(values.numpy(), input_dim, layer_name)
    else:
        values = _check_when_run(values, input_dim, layer_name)
    if dtype not in (tf.int32, tf.int64):
        values = tf.cast(values, tf.int64)
    if isinstance(ids, tf.SparseTensor):
        return tf.SparseTensor(ids.indices, values, ids.dense_shape)
    if isinstance(ids, tf.RaggedTensor):
        return ids.with_values(values)
    return values


def _range_message(layer_name, input_dim):
    return (
        f"Embedding layer '{layer_name}' received id",
        f"which is outside the valid range [0, input_dim) = [0, {input_dim}).",
    )


def _whole_message(layer_name, input_dim):
    return (
        f"Embedding layer '{layer_name}' received id",
        f"which is not a whole number; ids must be integers in "
        f"[0, input_dim) = [0, {input_dim}).",
    )


def _check_now(values, input_dim, layer_name):
    values = values.reshape(-1)
    if values.dtype.kind == "f":
        fractional = ~(np.floor(values) == values)  # NaN is not whole.
        if fractional.any():
            before, after = _whole_message(layer_name, input_dim)
            raise _invalid(f"{before} {values[fractional.argmax()]}, {after}")
    outside = (values < 0) | (values >= input_dim)
    if outside.any():
        before, after = _range_message(layer_name, input_dim)
        raise _invalid(f"{before} {values[outside.argmax()]}, {after}")


def _check_when_run(values, input_dim, layer_name):
    # Assert's message is [text, value, text]: string formatting ops would
    # keep the graph from compiling with XLA, which drops Asserts instead.
    flat = tf.reshape(values, [-1])
    lowest, highest = tf.reduce_min(flat), tf.reduce_max(flat)
    # Scalars compared in float64: rounding keeps their order, input_dim is exact.
    too_low = tf.cast(lowest, tf.float64) < 0
    too_high = tf.cast(highest, tf.float64) >= input_dim
    before, after = _range_message(layer_name, input_dim)
    checks = [
        tf.debugging.Assert(
            tf.logical_not(too_low | too_high),
            [before, tf.where(too_low, lowest, highest), after],
            name="check_id_range",
        )
    ]
    if flat.dtype.is_floating:
        fractional = tf.not_equal(tf.floor(flat), flat)  # NaN is not whole.
        before, after = _whole_message(layer_name, input_dim)
        checks.append(
            tf.debugging.Assert(
                tf.logical_not(tf.reduce_any(fractional)),
                [before, tf.boolean_mask(flat, fractional)[:1], after],
                name="check_ids_whole",
            )
        )
    with tf.control_dependencies(checks):
        return tf.identity(values)


def _invalid(message):
    return complete_error(tf.errors.InvalidArgumentError(None, None, message))


def complete_error(error):
    """Marks `error` as complete, so that Keras raises it as it is.

    Keras re-raises errors from a layer's `call` under a first line of its
    own ("Exception encountered when calling ..."); ours already say which
    layer, and their first line is the one to read.
    """
    error._keras_call_info_injected = True
    return error
