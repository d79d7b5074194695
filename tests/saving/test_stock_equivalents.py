"""`keras_embed.unswap` gives a model that needs nothing of ours: our
optimizers become their Keras counterparts with their state, our
regularizer the one it wraps, each change said in a `MigrationWarning`; the
result loads where keras_embed cannot be imported."""

import json
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

import keras_embed
from keras_embed.optimizers import SGD, Adagrad, Ftrl, LazyAdam, RowWiseAdagrad
from keras_embed.saving import saved_models
from keras_embed.saving.migration import MigrationWarning

IDS = np.array([[3, 9, 1, 0, 0, 0], [28, 2, 7, 5, 1, 4], [1, 1, 2, 3, 0, 0]], "int32")
Y = np.array([1.0, 0.0, 1.0])

NOTE_ADAM = (
    "unswap: optimizer keras_embed.optimizers.LazyAdam replaced by keras.optimizers.Adam, "
    "with its settings and state (step count, momentums, velocities): Adam updates every "
    "row of a table on every step (a row a batch did not look up still decays its moments "
    "and keeps moving), where LazyAdam updated only the looked-up rows."
)
NOTE_ADAGRAD = (
    "unswap: optimizer keras_embed.optimizers.Adagrad replaced by keras.optimizers.Adagrad, "
    "with its settings and state (step count, accumulators): the same rule, except that "
    "Keras's Adagrad adds the square of each occurrence's gradient for an id repeated in a "
    "batch, where ours added the square of their sum."
)
NOTE_ROWWISE = (
    "unswap: optimizer keras_embed.optimizers.RowWiseAdagrad replaced by "
    "keras.optimizers.Adagrad, with its settings and state (step count, each row's "
    "accumulator copied to every value of the row): the step is no longer per row: Adagrad "
    "keeps one accumulator per value (not per row; the table's accumulators take "
    "output_dim times the memory), adds to it each value's squared gradient (not the "
    "row's mean square), and adds epsilon under the root: epsilon=1e-08 became 1e-16, the "
    "same step for an accumulator of 0."
)
NOTE_FTRL = (
    "unswap: optimizer keras_embed.optimizers.Ftrl replaced by keras.optimizers.Ftrl, with "
    "its settings and state (step count, accumulators, linears): Keras's Ftrl updates every "
    "row of a table on every step: a row no step has looked up yet (its linear slot 0) "
    "becomes 0 at the next step, and l2_shrinkage_regularization_strength=0.01 shrinks "
    "every row, not only the looked-up ones."
)
NOTE_SGD_MOMENTUM = (
    "unswap: optimizer keras_embed.optimizers.SGD (in a LossScaleOptimizer) replaced by "
    "keras.optimizers.SGD, with its settings and state (step count, momentums): with "
    "momentum, Keras's SGD moves every row of a table on every step (a row a batch did not "
    "look up keeps coasting on its velocity, which decays), where ours moved only the "
    "looked-up rows."
)
NOTE_SGD = (
    "unswap: optimizer keras_embed.optimizers.SGD replaced by keras.optimizers.SGD, with its "
    "settings and state (step count): the same update."
)
WEIGHT_DECAY = (
    " `weight_decay` now decays every row on every step, not only the looked-up rows."
)
NOTE_REGULARIZER = (
    "unswap: layer 'words': embeddings_regularizer=LookedUpRowsRegularizer(L2(l2=0.01)) "
    "replaced by the L2(l2=0.01) it wraps, which keras.layers.Embedding applies to the "
    "whole table on every step, not only to the rows a batch looked up (a larger penalty, "
    "and a dense gradient for the table)."
)


def _trained(optimizer, policy="float32", regularizer=None, **compile_kwargs):
    """A model of ours, compiled with `optimizer` and trained 4 steps."""
    keras.utils.set_random_seed(11)
    keras.config.set_dtype_policy(policy)
    try:
        model = keras.Sequential(
            [
                keras.Input(shape=(6,), dtype="int32"),
                keras_embed.Embedding(30, 4, mask_zero=True, name="words",
                                      embeddings_regularizer=regularizer),
                keras.layers.GlobalAveragePooling1D(),
                keras.layers.Dense(3),
                keras.layers.Dense(1, dtype="float32"),
            ],
            name="ranker",
        )
    finally:
        keras.config.set_dtype_policy("float32")
    model.compile(optimizer, "mse", metrics=["mae"], **compile_kwargs)
    model.fit(IDS, Y, batch_size=1, epochs=1, verbose=0)
    model.fit(IDS[:1], Y[:1], epochs=1, verbose=0)
    return model


def _unswap(model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new_model = keras_embed.unswap(model)
    return new_model, [str(w.message) for w in caught if w.category is MigrationWarning]


def _inner(optimizer):
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.inner_optimizer
    return optimizer


# name: (optimizer, dtype policy, the table's regularizer, the notes)
CASES = {
    "lazy_adam": (
        lambda: LazyAdam(0.05, amsgrad=True, clipnorm=1.0,
                         weight_decay=0.01, use_ema=True),
        "float32", None, [NOTE_ADAM + WEIGHT_DECAY],
    ),
    "lazy_adam_mixed_schedule": (
        lambda: LazyAdam(keras.optimizers.schedules.ExponentialDecay(0.05, 2, 0.5)),
        "mixed_float16", None, [NOTE_ADAM.replace("LazyAdam replaced", "LazyAdam (in a "
                                                  "LossScaleOptimizer) replaced")],
    ),
    "adagrad_regularized": (
        lambda: Adagrad(0.1), "float32",
        keras_embed.LookedUpRowsRegularizer(keras.regularizers.L2(0.01)),
        [NOTE_REGULARIZER, NOTE_ADAGRAD],
    ),
    "rowwise_adagrad": (lambda: RowWiseAdagrad(0.1), "float32", None, [NOTE_ROWWISE]),
    "rowwise_adagrad_mixed": (
        lambda: RowWiseAdagrad(0.1, use_ema=True), "mixed_float16", None,
        [NOTE_ROWWISE.replace("RowWiseAdagrad replaced", "RowWiseAdagrad (in a "
                              "LossScaleOptimizer) replaced")],
    ),
    # Keras's Adagrad computes float16 variables' steps in float16, where
    # 1e-16 is 0: it failed on a zero accumulator ("indices[0] = 68 is not in
    # [0, 19)" from its sparse division), so epsilon is float16's smallest.
    "rowwise_adagrad_float16": (
        lambda: RowWiseAdagrad(0.1), "float16", None,
        [NOTE_ROWWISE + " epsilon=1e-16 is 0 in float16, the dtype keras.optimizers.Adagrad "
         "computes this model's float16 variables' steps in: it became 5.96046e-08, the "
         "smallest float16 (0 would divide 0 by 0 where a slot is 0)."],
    ),
    "ftrl": (
        lambda: Ftrl(0.1, l2_shrinkage_regularization_strength=0.01), "float32", None,
        [NOTE_FTRL],
    ),
    "sgd_momentum_mixed": (
        lambda: SGD(0.1, momentum=0.9, nesterov=True), "mixed_float16", None,
        [NOTE_SGD_MOMENTUM],
    ),
    "sgd_momentum_accumulated": (
        lambda: SGD(0.1, momentum=0.5, gradient_accumulation_steps=3), "float32", None,
        [NOTE_SGD_MOMENTUM.replace(" (in a LossScaleOptimizer)", "")],
    ),
    "sgd_explicit_loss_scale": (
        lambda: keras.optimizers.LossScaleOptimizer(SGD(0.1), initial_scale=64.0,
                                                    dynamic_growth_steps=3),
        "float32", None,
        [NOTE_SGD.replace("SGD replaced", "SGD (in a LossScaleOptimizer) replaced")],
    ),
}


def _slot_values(optimizer, attribute):
    return [np.asarray(v) for v in getattr(_inner(optimizer), attribute, None) or [] if v is not None]


@pytest.mark.parametrize("name", sorted(CASES))
def test_unswap_replaces_our_optimizer_with_its_state_and_says_what_changed(name):
    make, policy, regularizer, expected_notes = CASES[name]
    model = _trained(make(), policy, regularizer)
    stock, notes = _unswap(model)

    assert notes == expected_notes
    ours, theirs = _inner(model.optimizer), _inner(stock.optimizer)
    assert type(theirs).__module__.startswith("keras.src.optimizers")
    assert isinstance(stock.optimizer, keras.optimizers.LossScaleOptimizer) == isinstance(
        model.optimizer, keras.optimizers.LossScaleOptimizer
    )
    assert int(theirs._iterations) == int(ours._iterations) == 4  # batches
    assert int(theirs.iterations) == int(ours.iterations)
    # The settings the two share are the same (the name aside; RowWise's
    # epsilon moves under the root).
    shared = set(ours.get_config()) & set(theirs.get_config()) - {"name", "epsilon"}
    assert {k: theirs.get_config()[k] for k in shared} == {k: ours.get_config()[k] for k in shared}
    # Each slot carries over exactly (RowWise's row accumulator along its row).
    slots = {
        "lazy_adam": ["_momentums", "_velocities", "_velocity_hats"],
        "adagrad": ["_accumulators"],
        "ftrl": ["_accumulators", "_linears"],
        "sgd": ["momentums"],
    }
    kind = next(k for k in ("lazy_adam", "rowwise_adagrad", "adagrad", "ftrl", "sgd")
                if name.startswith(k))
    common = ["_model_variables_moving_average", "_accumulated_gradients"]
    for attribute in slots.get(kind, []) + common:
        old, new = _slot_values(ours, attribute), _slot_values(theirs, attribute)
        assert len(old) == len(new)
        if attribute == "_accumulated_gradients" and name.endswith("accumulated"):
            assert len(new) == 5 and any(np.any(a != 0) for a in new)
        for a, b in zip(old, new):
            np.testing.assert_array_equal(b, a)
    if kind == "rowwise_adagrad":
        assert theirs.epsilon == (5.96046e-08 if policy == "float16" else 1e-16)
        for row_wise, per_value, variable in zip(
            _slot_values(ours, "_accumulators"), _slot_values(theirs, "_accumulators"),
            theirs._trainable_variables,
        ):
            assert per_value.shape == tuple(variable.shape)
            expanded = row_wise.reshape(row_wise.shape + (1,) * (per_value.ndim - row_wise.ndim))
            np.testing.assert_array_equal(per_value, np.broadcast_to(expanded, per_value.shape))
    if isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        for a, b in zip(model.optimizer._variables, stock.optimizer._variables):
            np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
        assert stock.optimizer.initial_scale == model.optimizer.initial_scale
        assert stock.optimizer.dynamic_growth_steps == model.optimizer.dynamic_growth_steps
    # The training configuration otherwise is the same; the table and the
    # predictions too; and the model trains on.
    config, old_config = stock.get_compile_config(), model.get_compile_config()
    assert {k: v for k, v in config.items() if k != "optimizer"} == {
        k: v for k, v in old_config.items() if k != "optimizer"
    }
    np.testing.assert_array_equal(stock.predict(IDS, verbose=0),
                                  model.predict(IDS, verbose=0))
    stock.fit(IDS, Y, epochs=1, verbose=0)
    assert int(_inner(stock.optimizer)._iterations) == 5
    assert all(np.isfinite(w).all() for w in stock.get_weights())
    # The model given keeps ours.
    assert type(_inner(model.optimizer)).__module__.startswith("keras_embed")


def test_unswapped_table_gets_the_wrapped_regularizer():
    regularizer = keras_embed.LookedUpRowsRegularizer(keras.regularizers.L2(0.01))
    model = _trained(Adagrad(0.1), regularizer=regularizer)
    stock, _ = _unswap(model)
    layer = stock.get_layer("words")
    assert type(layer.embeddings_regularizer) is keras.regularizers.L2
    assert layer.embeddings_regularizer.get_config() == {"l2": 0.01}
    # Now the whole table's penalty, as stock computes it.
    stock(IDS)
    table = layer.get_weights()[0]
    np.testing.assert_allclose(
        [float(x) for x in stock.losses], [0.01 * float(np.sum(np.square(table)))],
        rtol=1e-6, atol=0,  # a float32 sum of 120 squares, about 1: a few ulps; none near 0
    )
    assert isinstance(model.get_layer("words").embeddings_regularizer,
                      keras_embed.LookedUpRowsRegularizer)


def test_unswap_names_what_still_needs_keras_embed():
    class Subclassed(keras_embed.Embedding):
        pass

    keras.utils.set_random_seed(12)
    ids = keras.Input(shape=(6,), dtype="int32")
    pooled = keras.layers.GlobalAveragePooling1D()(Subclassed(30, 4, name="own")(ids))
    penalized = keras.layers.Dense(
        1, name="out",
        kernel_regularizer=keras_embed.LookedUpRowsRegularizer(keras.regularizers.L1(0.1)),
    )(pooled)
    model = keras.Model(ids, penalized)
    stock, notes = _unswap(model)
    own = f"{Subclassed.__module__}.Subclassed"
    assert notes == [
        f"unswap: layer 'own' ({own}) left as it is: it is a "
        "subclass of keras_embed.Embedding, which unswap() does not replace.",
        "unswap: the new model still needs keras_embed to load: layer 'own' "
        f"({own}), layer 'out': kernel_regularizer "
        "(keras_embed.LookedUpRowsRegularizer). Replace them in the code that builds or "
        "compiles the model, then unswap again.",
    ]


@keras.saving.register_keras_serializable(package="tests")
class Tuned(LazyAdam):
    """A subclass of ours, which may change the rule."""


def test_a_subclass_of_our_optimizer_is_left_as_it_is_and_named():
    model = _trained(Tuned(0.05))
    stock, notes = _unswap(model)
    assert type(stock.optimizer) is Tuned
    assert notes == [
        "unswap: the new model still needs keras_embed to load: the optimizer "
        f"({Tuned.__module__}.Tuned). Replace it in the code that builds or compiles "
        "the model, then unswap again."
    ]


# Loads each `.keras` file in a folder with keras_embed unimportable (the
# package is installed editable in the venv, so it is blocked explicitly),
# and writes what it loaded for the test to compare.
LOADER = r"""
import importlib.abc, json, os, sys


class NoKerasEmbed(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "keras_embed":
            raise ImportError(f"keras_embed is not installed here (import of {name})")


sys.meta_path.insert(0, NoKerasEmbed())
try:
    import keras_embed
except ImportError as error:
    print("blocked:", error)
else:
    raise SystemExit("keras_embed imported")

import keras
import numpy as np

folder = sys.argv[1]
ids = np.load(os.path.join(folder, "ids.npy"))
loaded, classes = {}, {}
for name, policy in json.load(open(os.path.join(folder, "policies.json"))).items():
    # As Keras loads any mixed_float16 model with its LossScaleOptimizer:
    # under that global policy.
    keras.config.set_dtype_policy(policy)
    model = keras.models.load_model(os.path.join(folder, name + ".keras"))
    keras.config.set_dtype_policy("float32")
    optimizer = model.optimizer
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    classes[name] = [type(optimizer).__name__, type(inner).__name__,
                     type(model.get_layer("words")).__module__]
    loaded[name + "/predictions"] = model.predict(ids, verbose=0)
    for i, variable in enumerate(optimizer.variables):
        loaded[f"{name}/optimizer/{i}"] = np.asarray(variable)
    for i, weight in enumerate(model.get_weights()):
        loaded[f"{name}/weights/{i}"] = weight
np.savez(os.path.join(folder, "loaded.npz"), **loaded)
print(json.dumps(classes))
print("keras_embed modules:", sorted(m for m in sys.modules if m.startswith("keras_embed")))
"""


def test_unswapped_models_load_where_keras_embed_cannot_be_imported(tmp_path):
    folder = tmp_path / "stock"
    folder.mkdir()
    expected, policies = {}, {}
    for name, (make, policy, regularizer, _) in CASES.items():
        model = _trained(make(), policy, regularizer)
        stock, _ = _unswap(model)
        stock.save(folder / f"{name}.keras")
        expected[name], policies[name] = stock, policy
    # `keras-embed convert --to stock` of a saved model of ours.
    ours = _trained(LazyAdam(0.05, use_ema=True), regularizer=keras_embed.LookedUpRowsRegularizer("l2"))
    ours.save(tmp_path / "ours.keras")
    lines = saved_models.convert(
        str(tmp_path / "ours.keras"), str(folder / "converted.keras"), to="stock"
    )
    assert f"  note: {NOTE_ADAM}" in lines
    expected["converted"], policies["converted"] = (
        keras.models.load_model(folder / "converted.keras"), "float32"
    )
    np.save(folder / "ids.npy", IDS)
    (folder / "policies.json").write_text(json.dumps(policies))

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(folder)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout.splitlines()
    assert out[0] == ("blocked: keras_embed is not installed here (import of keras_embed)")
    assert out[-1] == "keras_embed modules: []"
    classes = json.loads(out[-2])
    loaded = np.load(folder / "loaded.npz")
    for name, stock in sorted(expected.items()):
        optimizer = stock.optimizer
        assert classes[name] == [
            type(optimizer).__name__, type(_inner(optimizer)).__name__,
            "keras.src.layers.core.embedding",
        ], name
        # A saved variable read back, predictions in one machine's kernels:
        # exact.
        np.testing.assert_array_equal(
            loaded[f"{name}/predictions"], stock.predict(IDS, verbose=0), err_msg=name
        )
        assert len([k for k in loaded if k.startswith(f"{name}/optimizer/")]) == len(
            optimizer.variables
        ), name
        for i, variable in enumerate(optimizer.variables):
            np.testing.assert_array_equal(
                loaded[f"{name}/optimizer/{i}"], np.asarray(variable), err_msg=f"{name} {i}"
            )
        for i, weight in enumerate(stock.get_weights()):
            np.testing.assert_array_equal(loaded[f"{name}/weights/{i}"], weight, err_msg=name)
