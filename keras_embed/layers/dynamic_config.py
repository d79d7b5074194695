"""`keras_embed.DynamicEmbedding`'s rules: its arguments, the keys it takes
and how their vectors are shaped, and the files it loads.

Every error names the layer, the argument or value received, and what is
valid.

Example:

>>> checks = Checks("users")
>>> try:
...     checks.eviction("fifo")
... except ValueError as error:
...     print(error)
DynamicEmbedding layer 'users': `eviction` must be 'lru' or 'lfu'. Received: eviction='fifo'.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from keras_embed.layers.bag_reductions import COMBINERS
from keras_embed.layers.bag_reductions import by_segments
from keras_embed.layers.config_checks import is_integer
from keras_embed.layers.errors import InvalidConfigError
from keras_embed.layers.errors import complete_error
from keras_embed.layers.key_map import fingerprints

KEY_DTYPES = ("int64", "string")
OOV = ("learned", "zeros", "buckets")
EVICTION = ("lru", "lfu")
_MAX_ROWS = 2**31 - 1  # Rows are int32 in the map.


class Checks:
    """The constructor's checks for the layer named `layer_name`."""

    def __init__(self, layer_name):
        self.prefix = f"DynamicEmbedding layer '{layer_name}'"

    def _error(self, text):
        return InvalidConfigError(f"{self.prefix}: {text}")

    def size(self, field, value, minimum=1):
        if not is_integer(value, minimum=minimum):
            raise self._error(
                f"`{field}` must be an integer >= {minimum}. Received: "
                f"{field}={value!r} (of type {type(value).__name__})."
            )
        return int(value)

    def optional_size(self, field, value, minimum=1):
        return None if value is None else self.size(field, value, minimum)

    def key_dtype(self, value):
        value = {"int": "int64", "str": "string"}.get(value, value)
        if isinstance(value, tf.DType):
            value = "string" if value == tf.string else value.name
        if value not in KEY_DTYPES:
            raise self._error(
                f"`key_dtype` must be 'int64' or 'string'. Received: key_dtype={value!r}."
            )
        return value

    def combiner(self, value):
        if value is None or value in COMBINERS:
            return value
        raise self._error(
            f"`combiner` must be None or one of {', '.join(map(repr, COMBINERS))}. "
            f"Received: combiner={value!r}."
        )

    def mask_key(self, value, key_dtype):
        if value is None:
            return None
        if key_dtype == "string" and isinstance(value, str):
            return value
        if key_dtype == "int64" and is_integer(value, minimum=-(2**63), below=2**63):
            return int(value)
        raise self._error(
            f"`mask_key` must be a key of key_dtype={key_dtype!r}. Received: "
            f"mask_key={value!r} (of type {type(value).__name__})."
        )

    def oov(self, oov, num_oov_buckets):
        if oov not in OOV:
            raise self._error(
                f"`oov` must be one of {', '.join(map(repr, OOV))}. Received: oov={oov!r}."
            )
        if oov != "buckets":
            if num_oov_buckets is not None:
                raise self._error(
                    f"`num_oov_buckets` goes with oov='buckets'. Received: "
                    f"num_oov_buckets={num_oov_buckets!r} with oov={oov!r}."
                )
            return oov, 1
        return oov, self.size("num_oov_buckets", num_oov_buckets)

    def eviction(self, value):
        if value not in EVICTION:
            raise self._error(f"`eviction` must be 'lru' or 'lfu'. Received: eviction={value!r}.")
        return value

    def fits(self, capacity, oov_rows):
        if capacity + oov_rows > _MAX_ROWS:
            raise self._error(
                f"`capacity` + OOV rows must be below 2**31. Received: "
                f"capacity={capacity} with {oov_rows} OOV rows."
            )

    def row_initializer(self, initializer):
        """A function `(shape, table_rows, seed_generator, dtype)` drawing
        rows as `initializer` draws a table of `table_rows` rows."""
        kinds = keras.initializers
        if isinstance(initializer, kinds.VarianceScaling):
            return _variance_scaling_rows(initializer)
        if isinstance(initializer, (kinds.RandomUniform, kinds.RandomNormal, kinds.TruncatedNormal)):
            config = initializer.get_config()

            def draw(shape, table_rows, seed, dtype):
                return type(initializer).from_config({**config, "seed": seed})(shape, dtype=dtype)

            return draw
        if isinstance(initializer, (kinds.Zeros, kinds.Ones, kinds.Constant)):
            return lambda shape, table_rows, seed, dtype: initializer(shape, dtype=dtype)
        raise self._error(
            "`embeddings_initializer` must draw each row on its own (a random "
            "uniform, normal, truncated normal or variance-scaling initializer, "
            "or a constant one): rows are drawn again whenever a key gets one. "
            f"Received: {type(initializer).__name__}."
        )


def _variance_scaling_rows(initializer):
    """Rows of a variance-scaling initializer scaled to the whole table:
    Keras's fans of a `(table_rows, output_dim)` matrix."""
    # Subclasses (GlorotUniform, HeNormal, ...) leave these out of their config.
    mode, distribution = initializer.mode, initializer.distribution

    def draw(shape, table_rows, seed, dtype):
        fan_in, fan_out = table_rows, shape[-1]
        fan = {"fan_in": fan_in, "fan_out": fan_out}.get(mode, (fan_in + fan_out) / 2.0)
        scale = initializer.scale / max(1.0, fan)
        kinds = keras.initializers
        if distribution == "truncated_normal":
            drawn = kinds.TruncatedNormal(0.0, math.sqrt(scale) / 0.87962566103423978, seed=seed)
        elif distribution == "untruncated_normal":
            drawn = kinds.RandomNormal(0.0, math.sqrt(scale), seed=seed)
        else:
            limit = math.sqrt(3.0 * scale)
            drawn = kinds.RandomUniform(-limit, limit, seed=seed)
        return drawn(shape, dtype=dtype)

    return draw


def check_strategy(layer_name):
    """Refuses a strategy with several replicas: each would admit keys of its
    own into a map that lives on one device."""
    if not tf.distribute.has_strategy():
        return
    strategy = tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.OneDeviceStrategy):
        return
    raise complete_error(ValueError(
        f"DynamicEmbedding layer '{layer_name}' cannot be built under "
        f"{type(strategy).__name__}: its key map lives on one device. Build and "
        "train the model without a distribution strategy (or under "
        "tf.distribute.OneDeviceStrategy)."
    ))


def keys_of(inputs, key_dtype, layer_name):
    """`inputs` as int64 keys of the same kind (string keys fingerprinted),
    and the kind: "dense", "ragged" or "sparse"."""
    if isinstance(inputs, tf.RaggedTensor):
        kind, values = "ragged", inputs.flat_values
    elif isinstance(inputs, tf.SparseTensor):
        # In row-major order, as bags summed by sorted segments need.
        inputs = tf.sparse.reorder(inputs)
        kind, values = "sparse", inputs.values
    else:
        kind = "dense"
        inputs = values = tf.convert_to_tensor(inputs)
    dtype = values.dtype
    if key_dtype == "string":
        if dtype != tf.string:
            raise _key_dtype_error(layer_name, key_dtype, dtype)
        keys = tf.reshape(fingerprints(values), tf.shape(values))
    elif dtype.is_integer:
        keys = tf.cast(values, tf.int64)
    else:
        raise _key_dtype_error(layer_name, key_dtype, dtype)
    if kind == "ragged":
        return inputs.with_flat_values(keys), kind
    if kind == "sparse":
        return tf.SparseTensor(inputs.indices, keys, inputs.dense_shape), kind
    return keys, kind


def _key_dtype_error(layer_name, key_dtype, dtype):
    wanted = "strings" if key_dtype == "string" else "integers"
    return complete_error(TypeError(
        f"DynamicEmbedding layer '{layer_name}' was built for key_dtype="
        f"{key_dtype!r}: its keys must be {wanted}. Received: keys of dtype "
        f"{dtype.name}."
    ))


def flat_values(keys):
    """The keys of a dense, ragged or sparse tensor, flat."""
    if isinstance(keys, tf.RaggedTensor):
        return keys.flat_values
    if isinstance(keys, tf.SparseTensor):
        return keys.values
    return tf.reshape(keys, [-1])


def shaped(vectors, keys, kind, output_dim, combiner, weights, padding, layer_name):
    """The flat keys' `vectors` as the layer's output: in the keys' shape,
    or combined into one vector per bag (`EmbeddingBag`'s reductions),
    `padding` left out."""
    if combiner is None:
        return reshaped(vectors, keys, kind, output_dim)
    bag_of, bags, shape = bags_of(keys, kind, layer_name)
    if weights is not None:
        weights = flat_weights(weights, keys, kind, vectors.dtype, layer_name)
    present = None if padding is None else tf.logical_not(padding)
    combined = by_segments(combiner, vectors, bag_of, bags, weights, present, True, False)
    return tf.reshape(combined, tf.concat([shape, [output_dim]], 0))


def reshaped(vectors, keys, kind, output_dim):
    """Flat `(n, output_dim)` vectors in the shape of `keys` + `output_dim`;
    a sparse tensor's missing entries get zeros."""
    if kind == "ragged":
        return keys.with_flat_values(vectors)
    if kind == "sparse":
        shape = tf.concat([keys.dense_shape, [output_dim]], 0)
        return tf.scatter_nd(keys.indices, vectors, shape)
    shape = tf.concat([tf.shape(keys), [output_dim]], 0)
    result = tf.reshape(vectors, shape)
    result.set_shape(keys.shape.concatenate([output_dim]))
    return result


def bags_of(keys, kind, layer_name):
    """Which bag each flat key is in, how many bags, and their shape."""
    if kind == "dense":
        if keys.shape.rank == 0:
            raise complete_error(ValueError(
                f"DynamicEmbedding layer '{layer_name}' with a combiner received a "
                "single key (shape ()); a bag is the last axis of the keys, e.g. "
                "shape (batch, length)."
            ))
        shape = tf.shape(keys, out_type=tf.int64)
        bag_of = tf.range(tf.size(keys, out_type=tf.int64)) // tf.maximum(shape[-1], 1)
        return bag_of, tf.reduce_prod(shape[:-1]), shape[:-1]
    if keys.shape.rank != 2:
        raise complete_error(ValueError(
            f"DynamicEmbedding layer '{layer_name}' with a combiner takes a "
            f"{'RaggedTensor' if kind == 'ragged' else 'SparseTensor'} of shape "
            f"(batch, length), one bag per row. Received: shape {keys.shape}."
        ))
    if kind == "ragged":
        return keys.value_rowids(), keys.nrows(), keys.nrows()[None]
    return keys.indices[:, 0], keys.dense_shape[0], keys.dense_shape[:1]


def flat_weights(weights, keys, kind, dtype, layer_name):
    """The per-key weights, flat, in the order of the flat keys."""
    if kind == "ragged" and isinstance(weights, tf.RaggedTensor):
        weights = weights.flat_values
    elif kind == "sparse" and isinstance(weights, tf.SparseTensor):
        weights = tf.sparse.reorder(weights).values
    elif kind == "dense" and not isinstance(weights, (tf.RaggedTensor, tf.SparseTensor)):
        weights = tf.convert_to_tensor(weights)
        if weights.shape.is_fully_defined() and keys.shape.is_fully_defined() \
                and weights.shape != keys.shape:
            raise complete_error(ValueError(
                f"DynamicEmbedding layer '{layer_name}': per-key weights must have "
                f"the keys' shape. Received: weights of shape {weights.shape} for "
                f"keys of shape {keys.shape}."
            ))
        weights = tf.reshape(weights, [-1])
    else:
        raise complete_error(TypeError(
            f"DynamicEmbedding layer '{layer_name}': per-key weights must be of "
            f"the keys' kind ({kind}). Received: weights of type {type(weights).__name__}."
        ))
    return tf.cast(weights, dtype)


def check_saved_state(layer, store):
    """Checks a file's state belongs to a layer of this capacity, width and
    key dtype before anything is assigned."""
    prefix = f"DynamicEmbedding layer '{layer.name}'"
    variables = layer._trainable_variables + layer._non_trainable_variables
    keys = set(store.keys())
    expected = {str(i) for i in range(len(variables))} | {"seed_generator_state", "key_is_string"}
    if keys != expected:
        raise InvalidConfigError(
            f"{prefix}: the file does not hold a DynamicEmbedding's state like "
            f"this layer's ({len(variables)} variables: "
            f"{', '.join(v.name for v in variables)}). Received: entries "
            f"{sorted(keys)}. Was it saved by a layer of other settings "
            "(min_count, sketch_width)?"
        )
    saved_string = bool(np.asarray(store["key_is_string"]))
    if saved_string != (layer.key_dtype == "string"):
        saved = "string" if saved_string else "int64"
        raise InvalidConfigError(
            f"{prefix} has key_dtype={layer.key_dtype!r}, but the file was saved "
            f"by a layer with key_dtype={saved!r}."
        )
    for index, variable in enumerate(variables):
        saved = tuple(np.asarray(store[str(index)]).shape)
        if saved != tuple(variable.shape):
            raise InvalidConfigError(
                f"{prefix}: the file's `{variable.name}` has shape {saved}, but "
                f"this layer's (capacity={layer.capacity}, output_dim="
                f"{layer.output_dim}, {layer.num_oov_buckets} OOV rows) is "
                f"{tuple(variable.shape)}. Load it into a layer of the file's "
                "capacity and sizes."
            )
