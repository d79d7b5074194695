"""Checks on the layer's arguments and saved tables, with errors that name
the layer and the field.

A config read from a file is data from outside: `Embedding.from_config`
evaluates none of it, and each check here refuses a value of the wrong kind
before anything is built. A table too large for this machine's memory is
refused before it is allocated, so the process survives to read the error.

Example:

>>> try:
...     check_size("words", "input_dim", "10")
... except InvalidConfigError as error:
...     print(error)
Embedding layer 'words': `input_dim` must be a positive integer. Received: input_dim='10' (of type str).
"""

import numbers

import numpy as np

from keras_embed.layers.bag_reductions import COMBINERS
from keras_embed.layers.errors import InvalidConfigError
from keras_embed.utils.memory import available_memory_bytes

# Tables smaller than this are not compared with the memory available.
_SMALL_TABLE_BYTES = 2**30

# Bytes per value of a table stored quantized, by quantization mode.
_QUANTIZED_BYTES = {"int8": 1.0, "float8": 1.0, "int4": 0.5}


def is_integer(value, minimum=1, below=None, numpy_integers=True):
    """Whether `value` is an integer in `[minimum, below)`: by default, a
    positive integer.

    Booleans are not integers here. `numpy_integers=False` accepts Python
    `int`s only, as stock Keras does for `input_dim` and `output_dim`.

    >>> import numpy as np
    >>> is_integer(np.int64(3)), is_integer(np.int64(3), numpy_integers=False)
    (True, False)
    >>> is_integer(True), is_integer(0), is_integer(0, minimum=0), is_integer(2**63, below=2**63)
    (False, False, True, False)
    """
    kind = numbers.Integral if numpy_integers else int
    return (
        isinstance(value, kind)
        and not isinstance(value, (bool, np.bool_))
        and value >= minimum
        and (below is None or value < below)
    )


def check_size(layer_name, field, value):
    """Checks `input_dim` or `output_dim` as stock Keras does: a positive
    `int`, not a bool."""
    if not is_integer(value, numpy_integers=False):
        raise InvalidConfigError(
            f"Embedding layer '{layer_name}': `{field}` must be a positive "
            f"integer. Received: {field}={value!r} (of type "
            f"{type(value).__name__})."
        )


def check_combiner(layer_name, value):
    """Returns `combiner` if it is one of `COMBINERS`; else an error."""
    if isinstance(value, str) and value in COMBINERS:
        return value
    raise InvalidConfigError(
        f"EmbeddingBag layer '{layer_name}': `combiner` must be one of "
        f"{', '.join(repr(c) for c in COMBINERS)}. Received: "
        f"combiner={value!r}."
    )


def check_mask_zero(layer_name, value):
    """Returns `mask_zero` as a bool; anything but a bool is an error.

    A config saying `"mask_zero": "false"` would otherwise mask, the string
    being truthy.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise InvalidConfigError(
        f"Embedding layer '{layer_name}': `mask_zero` must be True or False. "
        f"Received: mask_zero={value!r} (of type {type(value).__name__})."
    )


def check_batch_shape(layer_name, field, shape, with_batch):
    """Checks Keras 2's `batch_input_shape` / `input_shape`: a list or tuple
    of positive integers and None."""
    entries = tuple(shape) if isinstance(shape, (list, tuple)) else None
    if entries and all(
        entry is None or is_integer(entry) for entry in entries
    ):
        return tuple(None if entry is None else int(entry) for entry in entries)
    batch = "the batch dim, then " if with_batch else ""
    raise InvalidConfigError(
        f"Embedding layer '{layer_name}': `{field}` must be a list or tuple of "
        f"{batch}positive integers or None, one per input axis. Received: "
        f"{field}={shape!r}."
    )


def check_weights(layer_name, weights, input_dim, output_dim):
    """Returns the `weights` argument as a float array of shape
    `(input_dim, output_dim)`; the error gives the expected shape."""
    if isinstance(weights, (list, tuple)) and len(weights) == 1:
        weights = weights[0]
    expected = (input_dim, output_dim)
    try:
        array = np.asarray(weights)
    except ValueError:  # Ragged nested lists.
        array = None
    if array is None or array.shape != expected:
        shape = "a ragged list" if array is None else f"shape {array.shape}"
        raise InvalidConfigError(
            f"Embedding layer '{layer_name}': `weights` must have shape "
            f"(input_dim, output_dim) = {expected}. Received: weights of "
            f"{shape}."
        )
    if array.dtype.kind not in "iuf":
        raise InvalidConfigError(
            f"Embedding layer '{layer_name}': `weights` must hold numbers. "
            f"Received: weights of dtype {array.dtype}."
        )
    return array


def check_lora_rank(layer_name, value):
    """Returns `lora_rank` as an int or None; else an error.

    A positive integer enables LoRA at build; `None` or 0 (as stock) leave it
    off.
    """
    if value is None:
        return None
    if is_integer(value, minimum=0):
        return int(value)
    raise InvalidConfigError(
        f"Embedding layer '{layer_name}': `lora_rank` must be a positive "
        f"integer, or 0 or None for no LoRA. Received: lora_rank={value!r} "
        f"(of type {type(value).__name__})."
    )


def check_lora_alpha(layer_name, value):
    """Returns `lora_alpha` (an int or float) or None; else an error.

    Stock takes any number, and scales the LoRA delta by
    `lora_alpha / lora_rank`.
    """
    if value is None:
        return None
    if (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and np.isfinite(value)
        and value > 0
    ):
        return int(value) if isinstance(value, numbers.Integral) else float(value)
    raise InvalidConfigError(
        f"Embedding layer '{layer_name}': `lora_alpha` must be a positive "
        f"number or None. Received: lora_alpha={value!r} (of type "
        f"{type(value).__name__})."
    )


def table_bytes(input_dim, output_dim, dtype_policy, lora_rank=None):
    """Bytes the table takes as the layer's dtype policy stores it, plus its
    float32 LoRA matrices `(input_dim, lora_rank)` and
    `(lora_rank, output_dim)` if `lora_rank` is set."""
    mode = dtype_policy.quantization_mode
    if mode in _QUANTIZED_BYTES:
        per_value = _QUANTIZED_BYTES[mode]
    else:
        per_value = np.dtype(dtype_policy.variable_dtype).itemsize
    size = input_dim * output_dim * per_value
    if lora_rank:
        size += (input_dim + output_dim) * lora_rank * 4
    return size


def check_table_fits(layer_name, input_dim, output_dim, dtype_policy, lora_rank=None):
    """Refuses a table larger than the memory available, before allocating.

    Allocating it would fail deep in TensorFlow, or, where the system
    overcommits memory, get the process killed. Tables under 1 GiB are not
    checked.

    Under `tf.distribute.experimental.ParameterServerStrategy` with a
    variable partitioner, the table is split by rows over the parameter
    servers and this process (the coordinator) holds none of it: the
    largest shard is compared with the memory of this machine, the only
    one whose memory can be read here (a cluster's machines are usually
    alike). Where the shard count cannot be known, nothing is checked.
    """
    shards = table_shards(input_dim, output_dim, dtype_policy.variable_dtype)
    if shards is None:
        return
    rows = -(-input_dim // shards)  # The largest shard's rows.
    size = table_bytes(rows, output_dim, dtype_policy, lora_rank)
    if size < _SMALL_TABLE_BYTES:
        return
    available = available_memory_bytes()
    if available is None or size <= available:
        return
    mode = dtype_policy.quantization_mode
    values = f"{mode} values" if mode else f"{dtype_policy.variable_dtype} values"
    with_lora = size != table_bytes(rows, output_dim, dtype_policy)
    lora = f", with float32 LoRA matrices of rank {lora_rank}," if with_lora else ""
    smaller = f"Use a smaller input_dim{', lora_rank' if with_lora else ''} or output_dim"
    if shards > 1:
        raise InvalidConfigError(
            f"Embedding layer '{layer_name}': a table of (input_dim, output_dim) "
            f"= ({input_dim}, {output_dim}) {values}{lora} split by rows into "
            f"{shards} shards (the ParameterServerStrategy's variable "
            f"partitioner) needs {_gigabytes(size)} for its largest shard, more "
            f"than the {_gigabytes(available)} of memory available on this "
            f"machine. Split it into more shards, or {smaller[0].lower()}{smaller[1:]}."
        )
    raise InvalidConfigError(
        f"Embedding layer '{layer_name}': a table of (input_dim, output_dim) "
        f"= ({input_dim}, {output_dim}) {values}{lora} needs "
        f"{_gigabytes(size)}, more than the {_gigabytes(available)} of memory "
        f"available. {smaller} (e.g. hash ids into fewer buckets), or a machine with "
        "more memory."
    )


def table_shards(input_dim, output_dim, dtype):
    """How many row shards the current `tf.distribute` strategy splits a
    new `(input_dim, output_dim)` table into: 1, except under
    `ParameterServerStrategy` with a variable partitioner; `None` if the
    partitioner cannot tell."""
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy):
        return 1
    # Private: the strategy keeps the partitioner it was given here, and has
    # no public way to read it.
    partitioner = getattr(strategy.extended, "_variable_partitioner", None)
    if partitioner is None:
        return 1
    try:
        shards = int(partitioner(
            shape=tf.TensorShape([input_dim, output_dim]), dtype=tf.as_dtype(dtype)
        )[0])
    except Exception:  # A user's partitioner: anything may go wrong in it.
        return None
    return max(1, min(shards, input_dim))


def check_saved_shapes(layer, variables, store):
    """Checks the file has one array per variable of the layer, each of the
    variable's shape.

    Called by `Embedding.load_own_variables` before assigning: the shapes
    come from the layer's config, the arrays from the file.

    Args:
        layer: the `Embedding` loading, named in the error.
        variables: its variables, in the order they were saved.
        store: the saved arrays, keyed "0", "1", ...
    """
    if len(store.keys()) != len(variables):
        raise InvalidConfigError(
            f"Embedding layer '{layer.name}' expects {len(variables)} "
            f"saved variables ({', '.join(v.name for v in variables)}; "
            f"quantization mode {layer.quantization_mode}), but the file "
            f"lists {len(store.keys())}."
        )
    for index, variable in enumerate(variables):
        saved = tuple(store[str(index)].shape)
        expected = tuple(variable.shape)
        if saved != expected:
            raise InvalidConfigError(
                f"Embedding layer '{layer.name}': the file's "
                f"`{variable.name}` has shape {saved}, but the layer's config "
                f"(input_dim={layer.input_dim}, output_dim={layer.output_dim}) "
                f"makes it {expected}. The config and the weights in this "
                "file do not belong together."
            )


def _gigabytes(size):
    return f"{size / 1e9:,.1f} GB"
