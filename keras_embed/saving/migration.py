"""Moving models between `keras.layers.Embedding` and `keras_embed.Embedding`.

`swap(model)` gives a copy of a model in which every stock
`keras.layers.Embedding` is a `keras_embed.Embedding` with the same settings
and weights; `unswap(model)` does the reverse, for places that cannot install
keras_embed. Both work on `Sequential` and functional models, models nested
in them, and layers wrapped in `TimeDistributed` or similar wrappers. The
model given is never changed.

What they cannot carry over they report with a `MigrationWarning` naming
the layer: a subclass of the layer being replaced (such as
`keras.layers.ReversibleEmbedding`) is left as it is, and `unswap` drops the
settings stock Keras 3 has no place for (such as `input_length`).

`unswap` gives a model that loads without keras_embed: it also replaces our
optimizers and `LookedUpRowsRegularizer` by their Keras counterparts
(`keras_embed.saving.stock_equivalents`), each with a `MigrationWarning`
saying how the stock rule differs, and names in one more anything of ours
left in the model.
"""

import functools
import warnings

import keras
import numpy as np

from keras_embed.layers.dynamic_embedding import DynamicEmbedding
from keras_embed.layers.embedding import Embedding
from keras_embed.layers.embedding_bag import EmbeddingBag
from keras_embed.saving import layer_copy
from keras_embed.saving import stock_equivalents

STOCK = "keras.layers.Embedding"
OURS = "keras_embed.Embedding"


class MigrationWarning(UserWarning):
    """What `swap` or `unswap` left as it was or dropped, layer by layer."""


def swap(model):
    """A copy of `model` with every `keras.layers.Embedding` replaced by
    `keras_embed.Embedding`.

    The new layers have the same name, settings (`mask_zero`, dtype policy,
    initializer, regularizers, constraint, `trainable`, ...) and weights, so
    the new model predicts exactly what `model` predicts. A compiled model's
    copy is compiled the same way, with the optimizer's state copied. The
    model given is not changed.

    Subclasses of `keras.layers.Embedding` (such as
    `keras.layers.ReversibleEmbedding`) are copied as they are, with a
    `MigrationWarning` naming them.

    Example:

    >>> import keras, keras_embed
    >>> model = keras.Sequential([
    ...     keras.Input(shape=(10,), dtype="int32"),
    ...     keras.layers.Embedding(1000, 64, mask_zero=True),
    ...     keras.layers.GlobalAveragePooling1D(),
    ... ])
    >>> swapped = keras_embed.swap(model)
    >>> type(swapped.layers[0]).__module__
    'keras_embed.layers.embedding'

    Args:
        model: a `keras.Sequential` or functional `keras.Model`.

    Returns:
        A new model of the same kind.

    Raises:
        TypeError: if `model` is not a Keras model.
        ValueError: if `model` is a subclassed model, whose layers only its
            own code can replace.
    """
    return _replace(model, keras.layers.Embedding, _to_ours, "swap")


def unswap(model):
    """A copy of `model` with every `keras_embed.Embedding` replaced by a
    stock `keras.layers.Embedding`, for places without keras_embed.

    The new layers keep the name, settings and weights, and the model
    predicts the same values. Settings stock Keras 3 does not have (such as
    `input_length`) are dropped, each with a `MigrationWarning` naming the
    layer and the value. A `Sequential` that a leading
    `keras_embed.Embedding` gave an integer input keeps that input.

    The result needs nothing of keras_embed's to load. A compiled model's
    copy is compiled the same way, except that our optimizer becomes its
    Keras counterpart with the same settings and state (step count, slots,
    `use_ema`'s averages, accumulated gradients, a `LossScaleOptimizer`'s
    scale):
    `LazyAdam` -> `keras.optimizers.Adam`, `Adagrad` and `RowWiseAdagrad`
    -> `keras.optimizers.Adagrad` (each row's accumulator copied to every
    value of the row), `Ftrl` -> `keras.optimizers.Ftrl`, `SGD` ->
    `keras.optimizers.SGD`; and a `LookedUpRowsRegularizer` becomes the
    regularizer it wraps, which applies to the whole table. Each
    replacement comes with a `MigrationWarning` saying how the stock rule
    differs (Keras's optimizers update every row on every step, apply
    `weight_decay` to every row, and apply a step whose gradients are not
    finite, where ours skip it). A `keras_embed.EmbeddingBag` has no stock
    counterpart: a model holding one is refused (see Raises). Anything
    of ours left (a subclass of our layer or optimizer) is named in one
    more `MigrationWarning`.

    Example:

    >>> import keras, keras_embed
    >>> model = keras.Sequential([keras_embed.Embedding(1000, 64)])
    >>> stock = keras_embed.unswap(model)
    >>> type(stock.layers[0]).__name__, type(stock.layers[0]).__module__
    ('Embedding', 'keras.src.layers.core.embedding')

    Args:
        model: a `keras.Sequential` or functional `keras.Model`.

    Returns:
        A new model of the same kind.

    Raises:
        TypeError: if `model` is not a Keras model.
        ValueError: if `model` is a subclassed model, if a later layer
            needs the output shape that only `input_length` gave (for
            example `Flatten` -> `Dense` on inputs of unknown length), or
            if it holds a `keras_embed.EmbeddingBag`, which stock Keras has
            no layer for.
    """
    _refuse_bags(model)
    return _replace(model, Embedding, _to_stock, "unswap")


def _refuse_bags(model):
    """Raises for the first `EmbeddingBag` in `model`: no stock layer."""
    pending = _inner_layers(model)
    while pending:
        layer = pending.pop(0)
        if isinstance(layer, EmbeddingBag):
            pooling = ("keras.layers.GlobalAveragePooling1D()"
                       if layer.combiner == "mean"
                       else f"a layer of your own that takes the {layer.combiner}")
            raise ValueError(
                f"unswap() cannot replace layer '{layer.name}' "
                "(keras_embed.EmbeddingBag): stock Keras has no bag layer. "
                "Replace it in the model's code by keras.layers.Embedding("
                f"{layer.input_dim}, {layer.output_dim}, mask_zero="
                f"{layer.mask_zero}) on padded dense ids, followed by "
                f"{pooling} over the bag axis (with the Embedding's mask), "
                "and give that Embedding this layer's table "
                "(`layer.get_weights()`): the outputs are the same, except "
                "that a bag of padding only gives NaN there, zeros here. "
                "Then unswap the new model."
            )
        pending.extend(_inner_layers(layer))


def class_name(layer):
    """The public name of a layer's class: `keras.layers.Embedding`,
    `keras_embed.Embedding`, `keras_embed.EmbeddingBag`, or `module.Class`
    for any other."""
    cls = type(layer)
    if cls is keras.layers.Embedding:
        return STOCK
    if cls is Embedding:
        return OURS
    if cls is EmbeddingBag:
        return "keras_embed.EmbeddingBag"
    if cls is DynamicEmbedding:
        return "keras_embed.DynamicEmbedding"
    module = cls.__module__
    if module.startswith("keras.src.") and hasattr(keras.layers, cls.__name__):
        return f"keras.layers.{cls.__name__}"
    return f"{module}.{cls.__name__}"


def embedding_layers(model, bags=False, dynamic=False):
    """Every embedding layer in `model`, depth first, with its path.

    Looks into nested models and into wrappers (`layer.layer`, and
    `Bidirectional`'s two layers). A layer is an embedding layer if it is a
    `keras.layers.Embedding`, a `keras_embed.Embedding`, or a subclass of
    either. A layer used twice is listed once.

    Args:
        model: a Keras model.
        bags: whether `keras_embed.EmbeddingBag` layers count too (they hold
            a table; `swap` and `unswap` leave them as they are).
        dynamic: whether `keras_embed.DynamicEmbedding` layers count too
            (`swap` and `unswap` leave them as they are).

    Returns:
        A list of `(path, layer)`: `path` is the layer's name, prefixed by
        the names of the models and wrappers holding it
        (`"encoder/words"`).
    """
    kinds = (keras.layers.Embedding, Embedding) + ((EmbeddingBag,) if bags else ()) + (
        (DynamicEmbedding,) if dynamic else ())
    return [(path, layer) for path, layer, _ in all_layers(model) if isinstance(layer, kinds)]


def _inner_layers(layer):
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    inner = []
    for attribute in ("layer", "forward_layer", "backward_layer"):
        value = getattr(layer, attribute, None)
        if isinstance(value, keras.layers.Layer):
            inner.append(value)
    return inner


def _to_ours(layer):
    """Our layer from a stock layer's config, and nothing dropped."""
    return Embedding.from_config(layer.get_config()), {}


@functools.cache
def _stock_argument_names():
    names = set(keras.layers.Embedding(1, 1).get_config())
    return frozenset(names | {"lora_rank", "lora_alpha"})


@functools.cache
def _our_defaults():
    return Embedding(1, 1).get_config()


def _to_stock(layer):
    """A stock layer from our layer's config, and the settings dropped."""
    allowed = _stock_argument_names()
    defaults = _our_defaults()
    config = layer.get_config()
    kept = {k: v for k, v in config.items() if k in allowed}
    # Ours regularizes the looked-up rows; stock takes the one it wraps
    # (and applies it to the whole table: `regularizer_notes` says so).
    regularizer = stock_equivalents.stock_regularizer(layer.embeddings_regularizer)
    if regularizer is not layer.embeddings_regularizer:
        kept["embeddings_regularizer"] = keras.regularizers.serialize(regularizer)
    # Settings left at their defaults lose nothing; only the others are news.
    # Neither does `batch_input_shape`: the model's input keeps that shape
    # (a Sequential's input is kept; a functional model has its own).
    dropped = {
        k: v for k, v in config.items()
        if k not in allowed and k != "batch_input_shape" and v != defaults.get(k)
    }
    return keras.layers.Embedding.from_config(kept), dropped


def _replace(model, source, convert, verb):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"{verb}() takes a Keras model (keras.Sequential or a functional "
            f"keras.Model). Received: {model!r} of type "
            f"{type(model).__name__}."
        )
    if not isinstance(model, keras.Sequential) and not _is_functional(model):
        raise ValueError(
            f"{verb}() works on keras.Sequential and functional models. "
            f"Model '{model.name}' is a subclassed model "
            f"({type(model).__name__}): its layers are made by its own code, "
            "so replace the Embedding there (the import of keras_embed's "
            "Embedding is enough)."
        )
    if source is keras.layers.Embedding:
        source_name, target = STOCK, OURS
    else:
        source_name, target = OURS, STOCK
    pairs = []
    notes = []

    def clone_layer(layer):
        new_layer = None
        if type(layer) is source:
            new_layer, layer_notes = _convert(
                layer, convert, target, f"layer '{layer.name}'"
            )
            notes.extend(layer_notes)
        elif isinstance(layer, source):
            notes.append(
                f"layer '{layer.name}' ({class_name(layer)}) left as it is: "
                f"it is a subclass of {source_name}, which {verb}() "
                "does not replace."
            )
        else:
            new_layer = _clone_wrapper(layer, source, convert, target, notes)
        if new_layer is None:
            new_layer = layer_copy.fresh_copy(layer)
        pairs.append((layer, new_layer))
        return new_layer

    try:
        new_model = keras.models.clone_model(
            model, clone_function=clone_layer, recursive=True
        )
    except ValueError as error:
        if verb == "unswap" and any(
            getattr(layer, "input_length", None) is not None
            for _, layer in embedding_layers(model)
        ):
            raise ValueError(
                f"unswap() could not rebuild model '{model.name}' with stock "
                "Embedding layers: a later layer needs the sequence length "
                "that input_length gave. Give the model's keras.Input that "
                f"length instead, then unswap. The error was: {error}"
            ) from error
        raise
    new_model.trainable = model.trainable
    for old_layer, new_layer in pairs:
        _copy_weights(old_layer, new_layer)
    _compile_like(model, new_model, verb, notes)
    _copy_optimizer_state(model, new_model, notes)
    if verb == "unswap":
        left = stock_equivalents.needs_keras_embed(new_model, all_layers(new_model))
        if left:
            notes.append(
                "the new model still needs keras_embed to load: "
                f"{', '.join(left)}. Replace {'it' if len(left) == 1 else 'them'} "
                "in the code that builds or compiles the model, then unswap again."
            )
    for note in notes:
        warnings.warn(f"{verb}: {note}", MigrationWarning, stacklevel=3)
    return new_model


def _compile_like(model, new_model, verb, notes):
    """Compiles `new_model` as `model` is compiled, where `clone_model` did
    not: under the model's own dtype policy (`clone_model` made the copy
    under the global one, and `compile` wraps the optimizer in a
    `LossScaleOptimizer` by the model's policy) and, for `unswap`, with
    Keras's counterpart of our optimizer."""
    policy = model.dtype_policy
    if new_model.dtype_policy.name != policy.name and policy.quantization_mode is None:
        new_model.dtype_policy = policy
    if not model.compiled or not new_model.compiled:
        return
    optimizer = getattr(model, "optimizer", None)
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    config = model.get_compile_config()
    recompile = scaled != isinstance(new_model.optimizer, keras.optimizers.LossScaleOptimizer)
    if verb == "unswap":
        stock, note = stock_equivalents.stock_optimizer(optimizer)
        if stock is not None:
            # As `compile` was given it: the LossScaleOptimizer itself, or
            # the optimizer it wrapped by the policy.
            given = config.get("optimizer")
            explicit = isinstance(given, dict) and given.get("class_name") == "LossScaleOptimizer"
            if scaled and not explicit:
                stock = stock.inner_optimizer
            config["optimizer"] = keras.saving.serialize_keras_object(stock)
            notes.append(note)
            recompile = True
    if not recompile:
        return
    new_model.compile(
        **keras.saving.deserialize_keras_object(config), auto_scale_loss=scaled
    )
    if new_model.built:
        build_optimizer(new_model.optimizer, new_model.trainable_variables)


def all_layers(model):
    """`(path, layer, holds_layers)` for every layer in `model`, depth first,
    each once; `holds_layers` for models and wrappers."""
    found, seen = [], set()

    def visit(layer, prefix):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        path = f"{prefix}{layer.name}"
        inner = _inner_layers(layer)
        found.append((path, layer, bool(inner) or isinstance(layer, keras.Model)))
        for inner_layer in inner:
            visit(inner_layer, f"{path}/")

    for layer in _inner_layers(model):
        visit(layer, "")
    return found


def _convert(layer, convert, target, label):
    """The `target` layer that `convert` makes from `layer`, or `None` if
    `layer`'s weights would not fit it; and the notes on what was left or
    dropped, naming the layer by `label`."""
    new_layer, dropped = convert(layer)
    if not _weights_fit(layer, new_layer):
        return None, [
            f"{label} ({class_name(layer)}) left as it is: its weights "
            f"{_shapes(layer)} do not fit a {target}, which would have "
            f"{_shapes(new_layer)} (LoRA or quantized tables need the layer "
            "that made them)."
        ]
    notes = [
        f"{label}: {key}={value!r} dropped ({target} has no such setting)."
        for key, value in dropped.items()
    ]
    if target == STOCK:
        notes += stock_equivalents.regularizer_notes(layer, label)
    return new_layer, notes


def _clone_wrapper(layer, source, convert, target, notes):
    """A copy of a wrapper layer (such as `TimeDistributed`) whose wrapped
    layer is replaced, or `None` if it wraps nothing to replace."""
    if isinstance(layer, keras.Model):
        return None
    if not any(type(x) is source for x in _inner_layers(layer)):
        return None
    config = layer.get_config()
    for key, value in list(config.items()):
        wrapped = getattr(layer, key, None)
        if type(wrapped) is source and isinstance(value, dict):
            new_inner, inner_notes = _convert(
                wrapped, convert, target,
                f"layer '{wrapped.name}' in '{layer.name}'",
            )
            notes.extend(inner_notes)
            if new_inner is not None:
                config[key] = keras.saving.serialize_keras_object(new_inner)
    return layer.__class__.from_config(config)


def _shapes(layer):
    return [tuple(w.shape) for w in layer.weights]


def _weights_fit(old_layer, new_layer):
    """Whether `new_layer` has weights of the shapes `old_layer` has (an
    unbuilt `old_layer` has none to copy, so anything fits)."""
    if not old_layer.built:
        return True
    new_layer.build()
    return _shapes(new_layer) == _shapes(old_layer)


def _is_functional(model):
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)


def _copy_weights(old_layer, new_layer):
    if isinstance(old_layer, keras.Model):
        return
    if type(old_layer) is type(new_layer) and layer_copy.keeps_state_outside_weights(old_layer):
        # Lookup tables, adapted statistics: as a .keras file carries them.
        layer_copy.copy_state(old_layer, new_layer)
        return
    if not getattr(old_layer, "weights", None):
        return
    new_layer.set_weights(old_layer.get_weights())


def build_optimizer(optimizer, variables):
    """Builds `optimizer` for `variables` unless it is built: Keras 3's
    `LossScaleOptimizer.build` adds its loss scale and step counter again on
    every call (two variables more than a saved one holds)."""
    if not optimizer.built:
        optimizer.build(variables)


def _copy_optimizer_state(model, new_model, notes):
    optimizer = getattr(model, "optimizer", None)
    new_optimizer = getattr(new_model, "optimizer", None)
    if optimizer is None or new_optimizer is None or not optimizer.built:
        return
    build_optimizer(new_optimizer, new_model.trainable_variables)
    if type(_slots_keeper(optimizer)) is not type(_slots_keeper(new_optimizer)):
        # unswap: our optimizer and Keras's counterpart, slot by slot.
        if not stock_equivalents.copy_state(optimizer, new_optimizer):
            notes.append(
                "the optimizer's state (momentums, step count) was not copied: "
                "its variables do not line up with the new model's."
            )
        return
    old_values = [np.asarray(v) for v in optimizer.variables]
    new_variables = list(new_optimizer.variables)
    if [v.shape for v in old_values] != [tuple(v.shape) for v in new_variables]:
        if all(v.ndim == 0 for v in old_values):
            return  # Step count and learning rate only: no state to lose.
        notes.append(
            "the optimizer's state (momentums, step count) was not copied: "
            "its variables do not line up with the new model's."
        )
        return
    for variable, value in zip(new_variables, old_values):
        variable.assign(value)
    old_inner, new_inner = _slots_keeper(optimizer), _slots_keeper(new_optimizer)
    if isinstance(old_inner, keras.optimizers.Nadam) and isinstance(new_inner, keras.optimizers.Nadam):
        # Inside a LossScaleOptimizer, Keras 3 builds Nadam's product of its
        # momentum schedule where nothing tracks it: not among `variables`.
        new_inner._u_product.assign(old_inner._u_product)


def _slots_keeper(optimizer):
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.inner_optimizer
    return optimizer
