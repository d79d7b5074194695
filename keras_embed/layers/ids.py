"""What an id is: checks that turn bad ids into clear errors.

Stock Keras wraps negative ids to the last rows, truncates 1.7 to 1, accepts
booleans, and on GPU looks up zeros for ids >= input_dim. `checked` refuses
each of these, in eager calls and in graphs alike (`tf.function`, `fit`,
`predict`, `evaluate`, exported SavedModels): in a graph the check is an op
(an `Assert` on a `reduce_max`), not a Python `if`, so it travels with the
graph and does not depend on the device. Only CPU was run: no GPU was
available to this project, so the checks have not been run on a GPU.

Cost: for integer ids, one reduce_max over the ids viewed as unsigned (a
negative id is then larger than any `input_dim`), against a gather that
writes `output_dim` values per id; in eager calls, the same max in NumPy.
Float ids also get a whole-number test.

XLA (`jit_compile=True`) cannot raise an error from inside a compiled
function: TensorFlow compiles `Assert` to nothing, and XLA's gather clamps
out-of-range ids to row 0 or row `input_dim - 1`. There `checked` adds no
assert, and `nan_rows_for_bad_ids` turns the rows looked up for bad ids into
NaN, so that a bad id shows in the output and the loss rather than looking
up a plausible wrong row. Keras's default `jit_compile="auto"` never
compiles a model holding our layer with XLA (`jit_default`), so only an
explicit `jit_compile=True` gets NaN rows; our optimizers then skip the
step (`keras_embed.optimizers.finite_steps`).
"""

import numpy as np
import tensorflow as tf
from tensorflow.python.ops import control_flow_util

from keras_embed.layers.errors import complete_error

# The name of our check's `Assert` ops: `graph_errors` moves a graph error's
# sentence first only when the failing node has it, so that a user's own
# `Assert` worded like ours is left alone.
CHECK_OP_NAME = "keras_embed_check_ids"

_STRING_HINT = (
    " To look up words or other strings, map them to ids first with "
    "`keras.layers.StringLookup` or `keras.layers.TextVectorization`."
)


def checked(ids, input_dim, layer_name, in_xla):
    """Returns `ids` as int32/int64, after checking every id is valid.

    >>> checked(tf.constant([[1.0, 3.0]]), 5, "words", in_xla=False)
    <tf.Tensor: shape=(1, 2), dtype=int64, numpy=array([[1, 3]])>

    Args:
        ids: a dense, `tf.SparseTensor` or `tf.RaggedTensor` of ids: integers,
            or floats holding whole numbers.
        input_dim: ids must lie in `[0, input_dim)`.
        layer_name: named in the errors.
        in_xla: `in_xla_context()`, read once per call by the layer: under
            XLA no assert is added.

    Returns:
        `ids`, of the same kind and shape: int32 and int64 ids as they are,
        int8/int16/uint8/uint16 ids as int32, others as int64.

    Raises:
        TypeError: for string, boolean or complex ids.
        tf.errors.InvalidArgumentError: for an id outside `[0, input_dim)` or
            a float id that is not a whole number: at once in eager calls,
            when the graph runs otherwise (not under XLA, see the module
            docstring). The message names the layer, a bad id (in eager
            calls and for float ids the first one; for integer ids in a
            graph the negative id nearest 0, else the largest) and the
            valid range.
    """
    dtype = tf.as_dtype(ids.dtype)
    if not (dtype.is_integer or dtype.is_floating):
        raise complete_error(TypeError(_dtype_message(dtype, layer_name, input_dim)))
    values = _flat_values(ids)
    if dtype.is_integer and dtype.size < 4:
        values = tf.cast(values, tf.int32)  # Exact, as stock's cast.
    if tf.executing_eagerly():
        # NumPy has no bfloat16 of its own; float32 holds every value.
        exact = tf.cast(values, tf.float32) if dtype == tf.bfloat16 else values
        # np.asarray reads a CPU tensor in place; .numpy() would copy it.
        _check_now(np.asarray(exact), input_dim, layer_name)
    elif not in_xla:
        values = _check_when_run(values, input_dim, layer_name)
    if values.dtype not in (tf.int32, tf.int64):
        values = tf.cast(values, tf.int64)
    return _with_flat_values(ids, values)


def in_xla_context():
    """Whether the graph being built will be compiled by XLA."""
    if tf.executing_eagerly():
        return False
    graph = tf.compat.v1.get_default_graph()
    return control_flow_util.GraphOrParentsInXlaContext(graph)


def nan_rows_for_bad_ids(outputs, ids, input_dim, in_xla):
    """Under XLA, NaN in the rows looked up for bad ids; else `outputs`.

    XLA can raise no error, and its gather clamps a bad id to a real row;
    NaN makes the bad id show in the output and in the loss instead.

    Args:
        outputs: the lookup of `ids`: dense, or ragged for ragged `ids`.
        ids: the ids as the layer received them (before `checked`).
        input_dim: ids must lie in `[0, input_dim)`.
        in_xla: `in_xla_context()`, as passed to `checked`.
    """
    if not in_xla:
        return outputs
    if isinstance(ids, tf.SparseTensor):
        valid = tf.sparse.to_dense(
            tf.SparseTensor(ids.indices, _valid(ids.values, input_dim), ids.dense_shape),
            default_value=True,
        )
    else:
        valid = _valid(_flat_values(ids), input_dim)
    if isinstance(outputs, tf.RaggedTensor):
        return outputs.with_flat_values(
            _nan_where_invalid(outputs.flat_values, valid)
        )
    return _nan_where_invalid(outputs, valid)


def _nan_where_invalid(rows, valid):
    nan = tf.constant(float("nan"), rows.dtype)
    return tf.where(valid[..., tf.newaxis], rows, nan)


def _flat_values(ids):
    if isinstance(ids, tf.SparseTensor):
        return ids.values
    if isinstance(ids, tf.RaggedTensor):
        return ids.flat_values
    return ids


def _with_flat_values(ids, values):
    if isinstance(ids, tf.SparseTensor):
        return tf.SparseTensor(ids.indices, values, ids.dense_shape)
    if isinstance(ids, tf.RaggedTensor):
        return ids.with_flat_values(values)
    return values


def _valid(values, input_dim):
    """Elementwise: is each id a whole number in `[0, input_dim)`?"""
    valid = (values >= 0) & (tf.cast(values, tf.float64) < input_dim)
    if values.dtype.is_floating:
        valid &= tf.equal(tf.floor(values), values)  # NaN is not whole.
    return valid


def _check_now(values, input_dim, layer_name):
    """Raises for the first bad id in a NumPy array of ids."""
    flat = values.reshape(-1)
    if flat.size == 0:
        return
    kind, bits = flat.dtype.kind, 8 * flat.dtype.itemsize
    if kind == "i" and input_dim <= 2 ** (bits - 1):
        # One pass over the ids, as in graphs: viewed as unsigned, every
        # negative id is at least 2**(bits - 1), so at least input_dim.
        if flat.view(f"u{flat.dtype.itemsize}").max() < input_dim:
            return
    elif kind == "u":
        if flat.max() < input_dim:
            return
    elif kind == "f" and bool((np.floor(flat) == flat).all()):
        if flat.min() >= 0 and flat.max() < input_dim:
            return
    bad = ~((flat >= 0) & (flat < input_dim))
    if flat.dtype.kind == "f":
        bad |= ~(np.floor(flat) == flat)  # NaN is not whole.
    if not bad.any():  # int32 ids and input_dim > 2**31: all in range.
        return
    first = flat[bad.argmax()]
    whole = flat.dtype.kind != "f" or np.floor(first) == first
    if flat.dtype.kind == "f":  # As in graphs: 10 not 10.0, 1.7 not 1.70000005.
        first = np.format_float_positional(first, trim="-")
    raise complete_error(tf.errors.InvalidArgumentError(
        None, None, _sentence(layer_name, input_dim, first, whole)
    ))


def _sentence(layer_name, input_dim, value, whole):
    before, outside, fractional = _sentence_parts(layer_name, input_dim)
    return f"{before}{value}{outside if whole else fractional}"


def _sentence_parts(layer_name, input_dim):
    valid_range = f"[0, input_dim) = [0, {input_dim})"
    return (
        f"Embedding layer '{layer_name}' received id ",
        f", which is outside the valid range {valid_range}.",
        f", which is not a whole number; ids must be integers in {valid_range}.",
    )


def _check_when_run(values, input_dim, layer_name):
    """`values`, behind an Assert that they are valid ids when the graph runs."""
    if values.dtype.is_floating:
        check = _float_check(values, input_dim, layer_name)
    else:
        check = _integer_check(values, input_dim, layer_name)
    with tf.control_dependencies([check]):
        return tf.identity(values)


def _integer_check(values, input_dim, layer_name):
    """One reduce_max: as unsigned, negative ids are above any input_dim.

    int32 ids become uint32, in which -1 is 2**32 - 1 and every negative id
    is at least 2**31, so `max < input_dim` finds ids too large and negative
    ids at once, if input_dim <= 2**31 (int64 ids: 2**63).
    """
    dtype = values.dtype
    if dtype == tf.int32 and input_dim > 2**31:
        values, dtype = tf.cast(values, tf.int64), tf.int64
    unsigned = {tf.int32: tf.uint32, tf.int64: tf.uint64}.get(dtype, dtype)
    if input_dim > unsigned.max:
        return tf.no_op()  # Every id this dtype holds is below input_dim.
    top = tf.reduce_max(values if dtype.is_unsigned else tf.bitcast(values, unsigned))
    ok = tf.less(top, tf.constant(input_dim, unsigned))
    offending = top if dtype.is_unsigned else tf.bitcast(top, dtype)
    before, outside, _ = _sentence_parts(layer_name, input_dim)
    # All-string data: Assert then needs no cond to guard it.
    message = tf.strings.join([before, tf.strings.format("{}", offending), outside])
    return tf.debugging.Assert(ok, [message], name=CHECK_OP_NAME)


def _float_check(values, input_dim, layer_name):
    """Whole numbers in range; the message is built only for bad ids.

    `ok` is `reduce_all(_valid(flat, input_dim))`, computed from the min and
    max so that only two scalars, not every id, are cast to float64 (which
    `_valid` needs elementwise): measured 290 against 360 µs for 51,200
    float32 ids in a `tf.function` on a 2-core CPU.
    """
    flat = tf.reshape(values, [-1])
    ok = (
        tf.reduce_all(tf.equal(tf.floor(flat), flat))  # NaN is not whole.
        & (tf.cast(tf.reduce_min(flat), tf.float64) >= 0)
        & (tf.cast(tf.reduce_max(flat), tf.float64) < input_dim)
    )

    def fail():
        first = tf.boolean_mask(flat, tf.logical_not(_valid(flat, input_dim)))[0]
        before, outside, fractional = _sentence_parts(layer_name, input_dim)
        ending = tf.where(tf.equal(tf.floor(first), first), outside, fractional)
        message = tf.strings.join([before, tf.strings.format("{}", first), ending])
        with tf.control_dependencies(
            [tf.debugging.Assert(False, [message], name=CHECK_OP_NAME)]
        ):
            return tf.constant(False)

    return tf.cond(ok, lambda: tf.constant(True), fail, name="check_ids")


def _dtype_message(dtype, layer_name, input_dim):
    message = (
        f"Embedding layer '{layer_name}' received ids of dtype {dtype.name}; "
        f"ids must be integers in [0, input_dim) = [0, {input_dim})."
    )
    if dtype == tf.string:
        message += _STRING_HINT
    elif dtype == tf.bool:
        message += (
            " Booleans are not ids: cast them to int32 first if False and "
            "True are meant as ids 0 and 1."
        )
    return message
