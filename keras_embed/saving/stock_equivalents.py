"""Keras's own counterparts of keras_embed's optimizers and regularizer, for
`unswap`: a model that needs nothing of ours to load.

| ours (`keras_embed.optimizers.`) | Keras's (`keras.optimizers.`) | state copied |
|---|---|---|
| `LazyAdam` | `Adam` | momentums, velocities (and `amsgrad`'s velocity maxima) |
| `Adagrad` | `Adagrad` | accumulators |
| `RowWiseAdagrad` | `Adagrad` | each row's accumulator, copied to every value of the row |
| `Ftrl` | `Ftrl` | accumulators, linears |
| `SGD` | `SGD` | momentums (with `momentum > 0`) |

Every setting the two share carries over (learning rate or schedule, the
rule's own constants, `weight_decay`, clipping, `use_ema`, loss scaling,
gradient accumulation), and with it the step count, the learning rate, the
moving averages of `use_ema` and the accumulated gradients; a
`LossScaleOptimizer` around ours becomes one around Keras's, with its scale
and counter. `RowWiseAdagrad`'s `epsilon`, added to the root, becomes
`epsilon ** 2` under Keras's root: the same step for an accumulator of 0.

`keras_embed.LookedUpRowsRegularizer` becomes the regularizer it wraps,
which a stock `keras.layers.Embedding` applies to its whole table.

Each replacement is reported by `unswap` as a note (a `MigrationWarning`)
that says how the stock rule differs from ours.
"""

import dataclasses
import inspect
import re

import keras
import numpy as np

from keras_embed.layers.looked_up_rows import LookedUpRowsRegularizer
from keras_embed.optimizers.adagrad import Adagrad
from keras_embed.optimizers.ftrl import Ftrl
from keras_embed.optimizers.lazy_adam import LazyAdam
from keras_embed.optimizers.rowwise_adagrad import RowWiseAdagrad
from keras_embed.optimizers.sgd import SGD

WEIGHT_DECAY = (
    " `weight_decay` now decays every row on every step, not only the "
    "looked-up rows."
)


@dataclasses.dataclass(frozen=True)
class Counterpart:
    """How one of our optimizers becomes a Keras optimizer.

    Attributes:
        stock: the Keras optimizer class.
        slots: `(ours, stock)` pairs of attributes holding one slot per
            trained variable, copied slot by slot.
        state: what the note calls the slots, or a function of our
            optimizer giving it (`None`: no slots).
        change: what the note says of the stock rule, given our optimizer.
    """

    stock: type
    slots: tuple
    state: str
    change: object


def _lazy_adam_change(optimizer):
    return (
        "Adam updates every row of a table on every step (a row a batch did "
        "not look up still decays its moments and keeps moving), where "
        "LazyAdam updated only the looked-up rows."
    )


def _adagrad_change(optimizer):
    return (
        "the same rule, except that Keras's Adagrad adds the square of each "
        "occurrence's gradient for an id repeated in a batch, where ours "
        "added the square of their sum."
    )


def _rowwise_adagrad_change(optimizer):
    return (
        "the step is no longer per row: Adagrad keeps one accumulator per "
        "value (not per row; the table's accumulators take output_dim times "
        "the memory), adds to it each value's squared gradient (not the "
        "row's mean square), and adds epsilon under the root: "
        f"epsilon={optimizer.epsilon!r} became {_under_root(optimizer.epsilon)!r}, "
        "the same step for an accumulator of 0."
    )


def _ftrl_change(optimizer):
    change = (
        "Keras's Ftrl updates every row of a table on every step: a row no "
        "step has looked up yet (its linear slot 0) becomes 0 at the next "
        "step"
    )
    if optimizer.l2_shrinkage_regularization_strength:
        change += (
            ", and l2_shrinkage_regularization_strength="
            f"{optimizer.l2_shrinkage_regularization_strength!r} shrinks every "
            "row, not only the looked-up ones"
        )
    return change + "."


def _sgd_state(optimizer):
    return "momentums" if optimizer.momentum else None


def _sgd_change(optimizer):
    if not optimizer.momentum:
        return "the same update."
    return (
        "with momentum, Keras's SGD moves every row of a table on every step "
        "(a row a batch did not look up keeps coasting on its velocity, "
        "which decays), where ours moved only the looked-up rows."
    )


COUNTERPARTS = {
    LazyAdam: Counterpart(
        keras.optimizers.Adam,
        (("_momentums", "_momentums"), ("_velocities", "_velocities"),
         ("_velocity_hats", "_velocity_hats")),
        "momentums, velocities", _lazy_adam_change,
    ),
    Adagrad: Counterpart(
        keras.optimizers.Adagrad, (("_accumulators", "_accumulators"),),
        "accumulators", _adagrad_change,
    ),
    RowWiseAdagrad: Counterpart(
        keras.optimizers.Adagrad, (("_accumulators", "_accumulators"),),
        "each row's accumulator copied to every value of the row",
        _rowwise_adagrad_change,
    ),
    Ftrl: Counterpart(
        keras.optimizers.Ftrl,
        (("_accumulators", "_accumulators"), ("_linears", "_linears")),
        "accumulators, linears", _ftrl_change,
    ),
    SGD: Counterpart(
        keras.optimizers.SGD, (("momentums", "momentums"),), _sgd_state,
        _sgd_change,
    ),
}

# Slots every Keras optimizer keeps the same way (`use_ema`,
# `gradient_accumulation_steps`), ours included.
SHARED_SLOTS = ("_model_variables_moving_average", "_accumulated_gradients")


# The smallest float16 (subnormal), to 6 digits: 5.96046e-08.
FLOAT16_TINY = float(f"{float(np.finfo(np.float16).smallest_subnormal):.6g}")


def _under_root(epsilon):
    """`RowWiseAdagrad`'s `epsilon` (added to the root) as Keras's Adagrad's
    (added under it), equal where the accumulator is 0; to 6 digits (1e-16,
    not 1.0000000000000001e-16)."""
    return float(f"{float(epsilon) ** 2:.6g}")


def stock_optimizer(optimizer):
    """Keras's counterpart of `optimizer` (unbuilt), and the note that says
    what changed; `(None, None)` if `optimizer` is not one of ours.

    A `keras.optimizers.LossScaleOptimizer` around one of ours becomes one
    around its counterpart, with the same scale settings. Only our classes
    themselves are replaced: a subclass may change the rule.
    """
    wrapper = None
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        wrapper, optimizer = optimizer, optimizer.inner_optimizer
    counterpart = COUNTERPARTS.get(type(optimizer))
    if counterpart is None:
        return None, None
    config = optimizer.get_config()
    if isinstance(optimizer, RowWiseAdagrad):
        config["epsilon"] = _under_root(optimizer.epsilon)
    theirs = f"keras.optimizers.{counterpart.stock.__name__}"
    float16_note = ""
    if 0 < config.get("epsilon", 0) < FLOAT16_TINY and _updates_float16(optimizer):
        # Ours computes 16-bit variables' steps in float32; Keras's in their
        # dtype, where such an epsilon is 0 (and divides 0 by 0).
        float16_note = (
            f" epsilon={config['epsilon']!r} is 0 in float16, the dtype "
            f"{theirs} computes this model's float16 variables' steps in: it "
            f"became {FLOAT16_TINY!r}, the smallest float16 (0 would divide "
            "0 by 0 where a slot is 0)."
        )
        config["epsilon"] = FLOAT16_TINY
    if _is_default_name(type(optimizer), config["name"]):
        del config["name"]  # Keras's own default name instead of ours.
    stock = counterpart.stock.from_config(config)
    if wrapper is not None:
        stock = keras.optimizers.LossScaleOptimizer(
            stock,
            initial_scale=wrapper.initial_scale,
            dynamic_growth_steps=wrapper.dynamic_growth_steps,
            name=wrapper.name,
        )
    ours = f"keras_embed.optimizers.{type(optimizer).__name__}"
    if wrapper is not None:
        ours += " (in a LossScaleOptimizer)"
    state = counterpart.state
    if callable(state):
        state = state(optimizer)
    state = "step count" + (f", {state}" if state else "")
    note = (
        f"optimizer {ours} replaced by {theirs}, with its settings and state "
        f"({state}): {counterpart.change(optimizer)}"
    )
    if optimizer.weight_decay:
        note += WEIGHT_DECAY
    return stock, note + float16_note


def _updates_float16(optimizer):
    """Whether the built `optimizer` updates a float16 variable."""
    return any(
        str(v.dtype) == "float16" for v in getattr(optimizer, "_trainable_variables", [])
    )


def _is_default_name(cls, name):
    """Whether `name` is what `cls` names an optimizer not given a name
    (`lazy_adam`, `lazy_adam_1`, ...)."""
    default = inspect.signature(cls).parameters["name"].default
    if default is None:
        default = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
    return re.fullmatch(rf"{re.escape(default)}(_\d+)?", str(name)) is not None


def copy_state(old, new):
    """Copies the state of our built optimizer `old` (or a
    `LossScaleOptimizer` around it) into `new`, its built counterpart
    (`stock_optimizer`), slot by slot; returns False, copying nothing, if
    they were built for variables that do not line up."""
    if isinstance(old, keras.optimizers.LossScaleOptimizer) != isinstance(
        new, keras.optimizers.LossScaleOptimizer
    ):
        return False
    wrapper_pairs = []
    if isinstance(old, keras.optimizers.LossScaleOptimizer):
        # Its own variables (step count, learning rate, loss scale and the
        # counter of finite steps), the same class on both sides.
        wrapper_pairs = list(zip(old._variables, new._variables))
        if len(old._variables) != len(new._variables):
            return False
        old, new = old.inner_optimizer, new.inner_optimizer
    counterpart = COUNTERPARTS.get(type(old))
    if counterpart is None or (
        _shapes(old._trainable_variables) != _shapes(new._trainable_variables)
    ):
        return False
    pairs = wrapper_pairs + [(old._iterations, new._iterations)]
    if isinstance(old._learning_rate, keras.Variable) and isinstance(
        new._learning_rate, keras.Variable
    ):
        pairs.append((old._learning_rate, new._learning_rate))
    for ours, theirs in counterpart.slots + tuple(zip(SHARED_SLOTS, SHARED_SLOTS)):
        old_slots = getattr(old, ours, None) or []
        new_slots = getattr(new, theirs, None) or []
        pairs += [(a, b) for a, b in zip(old_slots, new_slots)
                  if a is not None and b is not None]
    for source, target in pairs:
        target.assign(_fitted(np.asarray(source), tuple(target.shape)))
    return True


def _fitted(value, shape):
    """`value` in `shape`: itself, or a row-wise slot (one value per row)
    repeated along each row."""
    if value.shape == shape:
        return value
    rows = value.reshape(value.shape + (1,) * (len(shape) - value.ndim))
    return np.broadcast_to(rows, shape)


def _shapes(variables):
    return [tuple(v.shape) for v in variables]


def stock_regularizer(regularizer):
    """The regularizer `LookedUpRowsRegularizer` wraps, or `regularizer`."""
    if isinstance(regularizer, LookedUpRowsRegularizer):
        return regularizer.regularizer
    return regularizer


def regularizer_notes(layer, label):
    """The note for a `LookedUpRowsRegularizer` on `layer`'s table."""
    regularizer = getattr(layer, "embeddings_regularizer", None)
    if not isinstance(regularizer, LookedUpRowsRegularizer):
        return []
    inner = _describe(regularizer.regularizer)
    return [
        f"{label}: embeddings_regularizer=LookedUpRowsRegularizer({inner}) "
        f"replaced by the {inner} it wraps, which keras.layers.Embedding "
        "applies to the whole table on every step, not only to the rows a "
        "batch looked up (a larger penalty, and a dense gradient for the "
        "table)."
    ]


def _describe(regularizer):
    """`L2(l2=0.01)`: a regularizer's class and config."""
    config = regularizer.get_config() if hasattr(regularizer, "get_config") else {}
    arguments = ", ".join(f"{key}={value!r}" for key, value in config.items())
    return f"{type(regularizer).__name__}({arguments})"


def _is_ours(cls):
    return any(c.__module__.split(".")[0] == "keras_embed" for c in cls.__mro__)


def _name(cls):
    """A class's public name: `keras_embed.Embedding`,
    `keras_embed.optimizers.LazyAdam`, or `module.Class`."""
    import keras_embed

    for prefix, namespace in (("keras_embed", keras_embed),
                              ("keras_embed.optimizers", keras_embed.optimizers)):
        if getattr(namespace, cls.__name__, None) is cls:
            return f"{prefix}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__name__}"


def needs_keras_embed(model, layers):
    """What in `model` only keras_embed can load, as phrases naming each
    thing: its layers (`layers`: `(path, layer)` pairs) of our classes or
    their subclasses, settings of theirs of ours (a regularizer), and an
    optimizer, loss or metric of ours.

    Args:
        model: a Keras model.
        layers: `(path, layer, holds_layers)` for each layer in `model`;
            the settings of a layer that holds others (a model, a wrapper)
            are not read, its layers' are.
    """
    found = []
    for path, layer, holds_layers in layers:
        if _is_ours(type(layer)):
            found.append(f"layer '{path}' ({_name(type(layer))})")
        elif not holds_layers:  # Those held are visited themselves.
            found += [
                f"layer '{path}': {key} ({name})"
                for key, name in _ours_in_config(layer.get_config())
            ]
    optimizer = getattr(model, "optimizer", None)
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    if optimizer is not None and _is_ours(type(optimizer)):
        found.append(f"the optimizer ({_name(type(optimizer))})")
    compile_config = model.get_compile_config() if model.compiled else {}
    found += [
        f"the training configuration's {key} ({name})"
        for key, name in _ours_in_config(
            {k: v for k, v in compile_config.items() if k != "optimizer"}
        )
    ]
    return list(dict.fromkeys(found))


def _ours_in_config(config, key=None):
    """`(key, class name)` for each object of ours serialized in `config`."""
    if isinstance(config, dict):
        registered = str(config.get("registered_name") or "")
        module = str(config.get("module") or "")
        if registered.startswith("keras_embed>") or module.split(".")[0] == "keras_embed":
            cls = keras.saving.get_registered_object(registered)
            name = _name(cls) if cls else f"{module}.{config.get('class_name')}"
            return [(key, name)]
        return [
            found for inner_key, value in config.items()
            for found in _ours_in_config(value, key or inner_key)
        ]
    if isinstance(config, (list, tuple)):
        return [found for value in config for found in _ours_in_config(value, key)]
    return []
