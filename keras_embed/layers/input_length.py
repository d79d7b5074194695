"""Keras 2's `input_length` shape rules, which Keras 3 dropped.

Keras 2 let an `Embedding` declare the length of the sequences it reads:
`Embedding(1000, 64, input_length=10)`. Three things followed from it, and
this module restores each of them:

- the layer's output shape fills unknown sequence dims from `input_length`
  (so `Flatten` -> `Dense` can build on inputs of shape `(None, None)`);
- an input whose known length disagrees with `input_length` is an error;
- as the first layer of a `Sequential`, the layer gives the model its input
  at once, so `model.output_shape` and `model.summary()` work before `fit`.
"""

import keras
import tensorflow as tf

from keras_embed.layers.config_checks import is_integer
from keras_embed.layers.errors import InvalidConfigError, complete_error


def standardize(input_length, layer_name):
    """Checks an `input_length` argument; returns it as an int, tuple or None.

    Args:
        input_length: `None`, a positive integer, or a list or tuple of
            positive integers and `None` (one entry per non-batch axis).
        layer_name: named in the error.

    Returns:
        `None`, an `int`, or a `tuple` (a list becomes a tuple, as JSON
        configs turn tuples into lists).
    """
    if input_length is None:
        return None
    if isinstance(input_length, (list, tuple)):
        entries = tuple(input_length)
        if entries and all(_is_length(d) or d is None for d in entries):
            return tuple(None if d is None else int(d) for d in entries)
    elif _is_length(input_length):
        return int(input_length)
    raise InvalidConfigError(
        f"Embedding layer '{layer_name}': `input_length` must be a positive "
        "integer, or a tuple of positive integers and None with one entry per "
        "non-batch axis of the input (each below 2**63, the largest dim a tensor can have). "
        f"Received: input_length={input_length!r} "
        f"(of type {type(input_length).__name__})."
    )


def _is_length(value):
    return is_integer(value, below=2**63)


def lengths(input_length):
    """`input_length` as a tuple with one entry per non-batch axis."""
    if isinstance(input_length, tuple):
        return input_length
    return (input_length,)


def batch_shape(input_length):
    """The `(None, *input_length)` batch shape Keras 2 gave the model input.

    Without `input_length` it is `(None, None)`: batches of id sequences of
    any length, as Keras 2 assumed.
    """
    return (None, *lengths(input_length))


def resolve(input_shape, input_length, layer_name):
    """The input shape with its unknown dims filled in from `input_length`.

    Raises:
        ValueError: if the input's rank does not match `input_length`, or a
            known dim disagrees with it. The message names both values.
    """
    input_shape = tuple(input_shape)
    if input_length is None:
        return input_shape
    expected = lengths(input_length)
    if len(input_shape) != len(expected) + 1:
        raise complete_error(ValueError(
            f"Embedding layer '{layer_name}' has input_length={input_length!r}, "
            f"which describes inputs of rank {len(expected) + 1} "
            f"(batch, {', '.join(map(str, expected))}), but received an input "
            f"of shape {input_shape} (rank {len(input_shape)})."
        ))
    dims = []
    for axis, (want, got) in enumerate(zip(expected, input_shape[1:]), 1):
        if want is not None and got is not None and want != got:
            raise complete_error(ValueError(
                f"Embedding layer '{layer_name}' has "
                f"input_length={input_length!r}, but received an input of "
                f"shape {input_shape}: axis {axis} has length {got}, "
                f"expected {want}."
            ))
        dims.append(want if got is None else got)
    return (input_shape[0], *dims)


def ensure(ids, input_length, layer_name):
    """Checks `ids` against `input_length`; returns `ids` with the static
    shape filled in.

    Dims known when the call is traced are checked then, with the message of
    `resolve`. Dims only known when a graph runs are checked as it runs, by
    `tf.ensure_shape`. Ragged dims have no length to check.
    """
    if input_length is None:
        return ids
    shape = resolve(ids.shape, input_length, layer_name)
    if isinstance(ids, (tf.SparseTensor, tf.RaggedTensor)):
        return ids
    return tf.ensure_shape(ids, shape)


def install_sequential_input(layer_class):
    """Makes a leading `layer_class` layer give a `Sequential` its input.

    Keras 3 builds a `Sequential` only once it knows the input shape, and
    builds the input as float32. Keras 2 built a model whose first layer is
    an `Embedding` at once, from `input_length`. We wrap `Sequential.add` so
    that when the first layer added is one of ours, an integer `InputLayer`
    of shape `(None, *input_length)` goes in front of it. Integer, not
    float32: float32 cannot hold ids of 2**24 and above, and a served model
    should take the ids it looks up.

    We also wrap `Sequential.build`: an explicit `model.build(shape)` then
    replaces that automatic input with an integer one of the shape asked
    for, as Keras 3 builds a model with no input (Keras 2 ignored it). The
    layer itself still checks the shape against its `input_length`.
    """
    stock_add = keras.Sequential.add
    stock_build = keras.Sequential.build

    def add(model, layer, rebuild=True):
        if not model._layers and isinstance(layer, layer_class):
            automatic = layer._keras2_input_layer()
            automatic._keras_embed_automatic = True
            stock_add(model, automatic, rebuild=False)
        return stock_add(model, layer, rebuild=rebuild)

    def build(model, input_shape=None):
        first = model._layers[0] if model._layers else None
        shape = _batch_shape_or_none(input_shape)
        if (
            getattr(first, "_keras_embed_automatic", False)
            and shape is not None
            and shape != first.batch_shape
        ):
            model._layers[0] = keras.layers.InputLayer(
                batch_shape=shape, dtype="int32"
            )
        return stock_build(model, input_shape)

    for wrapper, stock in ((add, stock_add), (build, stock_build)):
        wrapper.__doc__ = stock.__doc__
        wrapper.__wrapped__ = stock
    keras.Sequential.add = add
    keras.Sequential.build = build


def _batch_shape_or_none(input_shape):
    """`input_shape` as a tuple of ints and None, for every form stock's
    `Sequential.build` takes (tuples, lists, `tf.TensorShape`, NumPy
    integers); `None` for anything else (left to stock)."""
    if input_shape is None:
        return None
    try:
        dims = tf.TensorShape(input_shape).as_list()
    except (TypeError, ValueError):
        return None
    return tuple(dims)
