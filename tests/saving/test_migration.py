"""`keras_embed.swap` and `keras_embed.unswap`: every stock Embedding in a
model becomes ours (and back) with its settings and weights, the model given
is untouched, and what cannot be carried over is reported."""

import warnings

import keras
import numpy as np
import pytest

import keras_embed
from keras_embed.saving.migration import MigrationWarning, embedding_layers

IDS = np.array([[3, 9, 1, 0, 0, 0], [28, 2, 7, 5, 1, 4], [1, 1, 2, 3, 0, 0]], "int32")
SLOTS = (np.arange(36).reshape(3, 2, 6) % 29).astype("int32")


def _stock_text_model(trainable=True):
    """A compiled, trained Sequential whose Embedding uses every setting."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input(shape=(6,), dtype="int32"),
            keras.layers.Embedding(
                30, 4,
                embeddings_initializer=keras.initializers.RandomNormal(stddev=0.4, seed=2),
                embeddings_regularizer=keras.regularizers.L2(0.01),
                embeddings_constraint=keras.constraints.MaxNorm(2.0),
                mask_zero=True,
                dtype="mixed_float16",
                name="words",
            ),
            keras.layers.LSTM(3),
            keras.layers.Dense(1),
        ],
        name="classifier",
    )
    model.get_layer("words").trainable = trainable
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    model.fit(IDS, np.array([1.0, 0.0, 1.0]), epochs=2, verbose=0)
    return model


def _swap(model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new_model = keras_embed.swap(model)
    return new_model, [str(w.message) for w in caught if w.category is MigrationWarning]


def _unswap(model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new_model = keras_embed.unswap(model)
    return new_model, [str(w.message) for w in caught if w.category is MigrationWarning]


def test_swap_sequential_keeps_settings_weights_and_predictions():
    model = _stock_text_model()
    table = model.get_layer("words").get_weights()[0].copy()
    swapped, notes = _swap(model)

    assert notes == []
    layer = swapped.get_layer("words")
    assert type(layer) is keras_embed.Embedding
    stock_config = model.get_layer("words").get_config()
    assert layer.get_config() == {**stock_config, "input_length": None}
    assert layer.dtype_policy.name == "mixed_float16"
    assert layer.compute_dtype == "float16"
    assert swapped.name == "classifier"
    np.testing.assert_array_equal(layer.get_weights()[0], table)
    np.testing.assert_array_equal(
        swapped.predict(IDS, verbose=0), model.predict(IDS, verbose=0)
    )
    # The regularizer acts the same: the same penalty on the same table.
    assert len(model.losses) == 1
    np.testing.assert_allclose(
        [float(x) for x in swapped.losses], [float(x) for x in model.losses]
    )
    # The model given is untouched, and shares nothing with the new one.
    assert type(model.get_layer("words")) is keras.layers.Embedding
    assert layer is not model.get_layer("words")
    assert all(a is not b for a, b in zip(swapped.weights, model.weights))


def test_swap_keeps_the_activity_regularizer():
    # Not in the mixed_float16 model above: stock Keras cannot sum a float16
    # activity penalty with a float32 loss.
    model = keras.Sequential(
        [keras.Input(shape=(6,), dtype="int32"),
         keras.layers.Embedding(30, 4, activity_regularizer=keras.regularizers.L1(0.01))]
    )
    swapped, _ = _swap(model)
    assert swapped.layers[0].get_config()["activity_regularizer"] == (
        model.layers[0].get_config()["activity_regularizer"]
    )
    model(IDS)
    swapped(IDS)
    assert len(model.losses) == 1
    np.testing.assert_array_equal(
        [float(x) for x in swapped.losses], [float(x) for x in model.losses]
    )


def test_swap_keeps_trainable_and_compile_and_optimizer_state():
    model = _stock_text_model(trainable=False)
    swapped, notes = _swap(model)

    assert notes == []
    assert swapped.get_layer("words").trainable is False
    assert swapped.compiled
    assert swapped.get_compile_config() == model.get_compile_config()
    assert int(swapped.optimizer.iterations) == int(model.optimizer.iterations) == 2
    for new, old in zip(swapped.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
    # Training on goes the same way from the copied state.
    y = np.array([0.0, 1.0, 1.0])
    model.fit(IDS, y, epochs=1, verbose=0)
    swapped.fit(IDS, y, epochs=1, verbose=0)
    for new, old in zip(swapped.get_weights(), model.get_weights()):
        np.testing.assert_allclose(new, old, rtol=1e-6, atol=1e-7)
    # The frozen table did not move.
    np.testing.assert_array_equal(
        swapped.get_layer("words").get_weights()[0],
        model.get_layer("words").get_weights()[0],
    )


@pytest.mark.parametrize("optimizer", ["adam", "nadam"])
def test_swap_under_mixed_float16_keeps_the_loss_scale_optimizer_state(policy, optimizer):
    # Under the mixed_float16 policy, compile wraps the optimizer in a
    # LossScaleOptimizer, whose build added its two variables again when the
    # copy was built twice: the state was not copied (step 4 -> 0).
    policy("mixed_float16")
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((6,), dtype="int32"), keras.layers.Embedding(30, 4),
                              keras.layers.Flatten(), keras.layers.Dense(1, dtype="float32")])
    model.compile(optimizer, "mse")
    y = np.array([0.0, 1.0, 1.0])
    model.fit(IDS, y, batch_size=1, epochs=1, verbose=0)
    model.fit(IDS[:1], y[:1], epochs=1, verbose=0)
    swapped, notes = _swap(model)
    assert notes == []
    assert type(swapped.optimizer) is keras.optimizers.LossScaleOptimizer
    assert len(swapped.optimizer.variables) == len(model.optimizer.variables)
    assert int(swapped.optimizer.iterations) == int(model.optimizer.iterations) == 4
    for new, old in zip(swapped.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
    if optimizer == "nadam":  # Its product of the momentum schedule, untracked there.
        np.testing.assert_array_equal(swapped.optimizer.inner_optimizer._u_product.numpy(),
                                      model.optimizer.inner_optimizer._u_product.numpy())
    # The same kernels in one process: training on gives the same weights.
    model.fit(IDS, y, epochs=1, verbose=0)
    swapped.fit(IDS, y, epochs=1, verbose=0)
    for new, old in zip(swapped.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(new, old)


def _functional_model():
    """Functional: a nested Sequential, a layer used twice, a wrapped layer,
    an op between layers, and a ReversibleEmbedding."""
    keras.utils.set_random_seed(4)
    encoder = keras.Sequential(
        [
            keras.Input(shape=(6,), dtype="int32"),
            keras.layers.Embedding(30, 4, name="inner_words"),
            keras.layers.GlobalAveragePooling1D(),
        ],
        name="encoder",
    )
    words = keras.Input(shape=(6,), dtype="int32", name="words_in")
    slots = keras.Input(shape=(2, 6), dtype="int32", name="slots_in")
    shared = keras.layers.Embedding(30, 4, name="shared")
    reversible = keras.layers.ReversibleEmbedding(30, 4, name="reversible")
    pool = keras.layers.GlobalAveragePooling1D
    wrapped = keras.layers.TimeDistributed(
        keras.layers.Embedding(30, 2, name="slot_table"), name="per_slot"
    )(slots)
    features = keras.layers.Concatenate()(
        [
            encoder(words),
            pool()(shared(words)),
            pool()(shared(words + 1)),
            pool()(reversible(words)),
            keras.layers.Flatten()(wrapped),
        ]
    )
    return keras.Model([words, slots], keras.layers.Dense(2)(features), name="mixed")


def test_swap_functional_nested_shared_and_wrapped_layers():
    model = _functional_model()
    swapped, notes = _swap(model)

    kinds = {path: type(layer) for path, layer in embedding_layers(swapped)}
    assert kinds == {
        "shared": keras_embed.Embedding,
        "reversible": keras.layers.ReversibleEmbedding,
        "encoder/inner_words": keras_embed.Embedding,
        "per_slot/slot_table": keras_embed.Embedding,
    }
    np.testing.assert_array_equal(
        swapped.predict([IDS, SLOTS], verbose=0), model.predict([IDS, SLOTS], verbose=0)
    )
    # The shared layer is still one layer with one table.
    assert len(swapped.weights) == len(model.weights)
    # Subclasses are copied as they are, and named in a warning.
    assert notes == [
        "swap: layer 'reversible' (keras.layers.ReversibleEmbedding) left as it "
        "is: it is a subclass of keras.layers.Embedding, which swap() does not "
        "replace."
    ]
    assert swapped.get_layer("reversible") is not model.get_layer("reversible")
    np.testing.assert_array_equal(
        swapped.get_layer("reversible").get_weights()[0],
        model.get_layer("reversible").get_weights()[0],
    )
    kinds = {path: type(layer) for path, layer in embedding_layers(model)}
    assert set(kinds.values()) == {keras.layers.Embedding, keras.layers.ReversibleEmbedding}


def test_unswap_reverses_swap():
    model = _functional_model()
    swapped, _ = _swap(model)
    back, notes = _unswap(swapped)

    assert notes == []
    for (path, old), (new_path, new) in zip(embedding_layers(model), embedding_layers(back)):
        assert path == new_path
        assert type(new) is type(old)
        assert new.get_config() == old.get_config()
    np.testing.assert_array_equal(
        back.predict([IDS, SLOTS], verbose=0), model.predict([IDS, SLOTS], verbose=0)
    )


def test_unswap_reports_input_length_and_keeps_the_integer_input():
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras_embed.Embedding(30, 4, input_length=6, name="fixed"),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )
    stock, notes = _unswap(model)

    assert type(stock.get_layer("fixed")) is keras.layers.Embedding
    assert notes == [
        "unswap: layer 'fixed': input_length=6 dropped "
        "(keras.layers.Embedding has no such setting)."
    ]
    assert stock.input_shape == (None, 6)
    assert stock.inputs[0].dtype == "int32"
    np.testing.assert_array_equal(stock.predict(IDS, verbose=0), model.predict(IDS, verbose=0))
    # The model given still has its input_length.
    assert model.get_layer("fixed").input_length == 6


def test_unswap_explains_when_a_later_layer_needs_input_length():
    ids = keras.Input(shape=(None,), dtype="int32")
    embedded = keras_embed.Embedding(30, 4, input_length=6)(ids)
    model = keras.Model(ids, keras.layers.Dense(1)(keras.layers.Flatten()(embedded)))
    with pytest.raises(ValueError, match="a later layer needs the sequence length "
                       "that input_length gave. Give the model's keras.Input that "
                       "length instead"):
        keras_embed.unswap(model)


def test_swap_carries_lora_and_quantized_tables():
    keras.utils.set_random_seed(6)
    lora = keras.Sequential(
        [keras.Input(shape=(6,), dtype="int32"), keras.layers.Embedding(30, 8, name="adapted"),
         keras.layers.GlobalAveragePooling1D()]
    )
    lora.get_layer("adapted").enable_lora(2)
    lora.get_layer("adapted").lora_embeddings_b.assign(np.full((2, 8), 0.3, "float32"))
    quantized = keras.Sequential(
        [keras.Input(shape=(6,), dtype="int32"), keras.layers.Embedding(30, 8, name="int8"),
         keras.layers.GlobalAveragePooling1D()]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "InputLayer does not have a quantize method"
        quantized.quantize("int8")
    for model in (lora, quantized):
        swapped, notes = _swap(model)
        assert notes == []
        assert type(swapped.layers[0]) is keras_embed.Embedding
        np.testing.assert_array_equal(
            swapped.predict(IDS, verbose=0), model.predict(IDS, verbose=0)
        )


def test_a_table_that_does_not_fit_is_left_as_it_is(monkeypatch):
    # Stands in for a stock table layout (a future quantization mode, say)
    # that keras_embed.Embedding cannot hold.
    from keras_embed.saving import migration

    monkeypatch.setattr(
        migration, "_to_ours",
        lambda layer: (keras_embed.Embedding(layer.input_dim, layer.output_dim + 1), {}),
    )
    model = keras.Sequential(
        [keras.Input(shape=(6,), dtype="int32"), keras.layers.Embedding(30, 4, name="odd")]
    )
    swapped, notes = _swap(model)
    assert type(swapped.layers[0]) is keras.layers.Embedding
    assert notes == [
        "swap: layer 'odd' (keras.layers.Embedding) left as it is: its weights "
        "[(30, 4)] do not fit a keras_embed.Embedding, which would have [(30, 5)] "
        "(LoRA or quantized tables need the layer that made them)."
    ]
    np.testing.assert_array_equal(swapped.predict(IDS, verbose=0), model.predict(IDS, verbose=0))


def _wrapped_model(table):
    """`table` in a TimeDistributed named 'per_slot', over SLOTS."""
    keras.utils.set_random_seed(7)
    slots = keras.Input(shape=(2, 6), dtype="int32")
    return keras.Model(slots, keras.layers.TimeDistributed(table, name="per_slot")(slots))


def test_wrapped_layers_get_the_notes_of_unwrapped_ones():
    model = _wrapped_model(keras_embed.Embedding(30, 2, input_length=6, name="slot_table"))
    stock, notes = _unswap(model)
    assert type(stock.get_layer("per_slot").layer) is keras.layers.Embedding
    assert notes == [
        "unswap: layer 'slot_table' in 'per_slot': input_length=6 dropped "
        "(keras.layers.Embedding has no such setting)."
    ]
    np.testing.assert_array_equal(stock.predict(SLOTS, verbose=0), model.predict(SLOTS, verbose=0))


def test_a_wrapped_table_that_does_not_fit_is_left_as_it_is(monkeypatch):
    from keras_embed.saving import migration

    monkeypatch.setattr(
        migration, "_to_ours",
        lambda layer: (keras_embed.Embedding(layer.input_dim, layer.output_dim + 1), {}),
    )
    model = _wrapped_model(keras.layers.Embedding(30, 4, name="odd"))
    swapped, notes = _swap(model)
    assert type(swapped.get_layer("per_slot").layer) is keras.layers.Embedding
    assert notes == [
        "swap: layer 'odd' in 'per_slot' (keras.layers.Embedding) left as it is: "
        "its weights [(30, 4)] do not fit a keras_embed.Embedding, which would "
        "have [(30, 5)] (LoRA or quantized tables need the layer that made them)."
    ]
    np.testing.assert_array_equal(swapped.predict(SLOTS, verbose=0), model.predict(SLOTS, verbose=0))


def test_swap_of_an_unbuilt_sequential():
    model = keras.Sequential([keras.layers.Embedding(30, 4), keras.layers.Dense(1)])
    swapped, _ = _swap(model)
    assert type(swapped.layers[0]) is keras_embed.Embedding
    assert not model.built


def test_swap_rejects_what_is_not_a_sequential_or_functional_model():
    with pytest.raises(TypeError, match=r"swap\(\) takes a Keras model .* Received: "
                       r"<Embedding name=e.*of type Embedding"):
        keras_embed.swap(keras.layers.Embedding(3, 2, name="e"))

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="custom")
            self.table = keras.layers.Embedding(3, 2)

        def call(self, ids):
            return self.table(ids)

    with pytest.raises(ValueError, match=r"unswap\(\) works on keras.Sequential and "
                       r"functional models. Model 'custom' is a subclassed model "
                       r"\(Subclassed\)"):
        keras_embed.unswap(Subclassed())


def test_warnings_are_migration_warnings_a_user_can_filter():
    model = _functional_model()
    with pytest.warns(MigrationWarning, match="'reversible'"):
        keras_embed.swap(model)
    assert issubclass(MigrationWarning, UserWarning)


def test_optimizer_state_that_does_not_line_up_is_reported():
    # Frozen after training: the optimizer holds slots for a table the new
    # model no longer trains.
    model = _stock_text_model()
    model.get_layer("words").trainable = False
    swapped, notes = _swap(model)
    assert notes == [
        "swap: the optimizer's state (momentums, step count) was not copied: "
        "its variables do not line up with the new model's."
    ]
    assert swapped.compiled


def test_unswap_refuses_an_embedding_bag_and_says_what_to_do():
    ids = keras.Input((4,), dtype="int32")
    inner = keras.Sequential([keras_embed.EmbeddingBag(50, 8, mask_zero=True, name="genres")])
    model = keras.Model(ids, keras.layers.Dense(1)(inner(ids)))
    with pytest.raises(ValueError) as caught:
        keras_embed.unswap(model)
    assert str(caught.value).startswith(
        "unswap() cannot replace layer 'genres' (keras_embed.EmbeddingBag): stock Keras "
        "has no bag layer. Replace it in the model's code by keras.layers.Embedding(50, 8, "
        "mask_zero=True) on padded dense ids, followed by "
        "keras.layers.GlobalAveragePooling1D() over the bag axis"
    )
    # swap has nothing to replace in it: the bag is copied as it is.
    swapped = keras_embed.swap(model)
    batch = np.array([[1, 2, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(swapped.predict(batch, verbose=0), model.predict(batch, verbose=0))
    assert type(swapped.layers[1].layers[0]) is keras_embed.EmbeddingBag


def test_unswap_keeps_a_batch_input_shape_in_the_models_input_and_says_nothing():
    model = keras.Sequential([keras_embed.Embedding(10, 2, batch_input_shape=(None, 4))])
    with warnings.catch_warnings():
        warnings.simplefilter("error", MigrationWarning)
        stock = keras_embed.unswap(model)
    assert type(stock.layers[0]) is keras.layers.Embedding
    assert stock.input_shape == model.input_shape == (None, 4)


def _trained_under(policy_name, optimizer):
    """A stock model built and trained under `policy_name`, returned with
    the global policy back at float32, as a later `swap` meets it."""
    keras.config.set_dtype_policy(policy_name)
    try:
        keras.utils.set_random_seed(8)
        model = keras.Sequential(
            [keras.Input((6,), dtype="int32"), keras.layers.Embedding(30, 4, name="words"),
             keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1, dtype="float32")]
        )
        model.compile(optimizer, "mse")
        model.fit(IDS, np.array([0.0, 1.0, 1.0]), batch_size=1, epochs=1, verbose=0)
    finally:
        keras.config.set_dtype_policy("float32")
    return model


def _assert_same_training_state(new, old):
    assert type(new.optimizer) is type(old.optimizer)
    assert len(new.optimizer.variables) == len(old.optimizer.variables)
    for a, b in zip(new.optimizer.variables, old.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(new.get_weights(), old.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_swap_keeps_the_loss_scale_optimizer_of_a_model_built_under_mixed_float16():
    # clone_model made the copy under the global policy (float32 again), and
    # compile wraps the optimizer by the model's policy: the copy lost its
    # LossScaleOptimizer and the state was reported as not copied.
    model = _trained_under("mixed_float16", keras.optimizers.Adam(0.05))
    assert type(model.optimizer) is keras.optimizers.LossScaleOptimizer
    swapped, notes = _swap(model)
    assert notes == []
    assert swapped.dtype_policy.name == "mixed_float16"
    _assert_same_training_state(swapped, model)


@pytest.mark.parametrize(
    "policy_name", ["float32", "mixed_float16", "mixed_bfloat16", "float16", "bfloat16"]
)
def test_swap_then_unswap_keeps_the_training_state_with_ema(policy_name):
    model = _trained_under(policy_name, keras.optimizers.Adam(0.05, use_ema=True))
    swapped, notes = _swap(model)
    assert notes == []
    back, notes = _unswap(swapped)
    assert notes == []
    assert type(back.get_layer("words")) is keras.layers.Embedding
    assert back.get_layer("words").dtype_policy.name == policy_name
    assert len(back.optimizer.inner_optimizer._model_variables_moving_average
               if policy_name == "mixed_float16"
               else back.optimizer._model_variables_moving_average) == 3
    for copy in (swapped, back):
        _assert_same_training_state(copy, model)
    # The same kernels in one process: training on gives the same weights.
    y = np.array([1.0, 1.0, 0.0])
    for each in (model, swapped, back):
        each.fit(IDS, y, epochs=1, verbose=0)
    _assert_same_training_state(back, model)
    _assert_same_training_state(swapped, model)


def test_swap_then_unswap_keeps_an_explicit_loss_scale_optimizer():
    model = _trained_under(
        "float32",
        keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1, momentum=0.5),
                                            initial_scale=128.0, dynamic_growth_steps=2),
    )
    swapped, _ = _swap(model)
    back, notes = _unswap(swapped)
    assert notes == []
    assert back.get_compile_config() == model.get_compile_config()
    assert back.optimizer.dynamic_growth_steps == 2
    _assert_same_training_state(back, model)
