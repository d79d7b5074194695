"""LoRA trains again after a reload: A gets fresh values from its
initializer, B zeros (stock zeroes both, and LoRA then never trains)."""

import keras
import numpy as np

import keras_embed


def _model():
    model = keras.Sequential([
        keras.Input(shape=(3,), dtype="int32"),
        keras_embed.Embedding(20, 4, lora_rank=2, name="words"),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1),
    ])
    model.compile(keras.optimizers.SGD(0.5), "mse")
    return model


def test_fit_after_reload_changes_the_outputs(tmp_path):
    keras.utils.set_random_seed(4)
    ids = np.array([[1, 2, 3], [4, 5, 6]])
    y = np.array([[1.0], [-1.0]])
    model = _model()
    model.fit(ids, y, epochs=2, verbose=0)
    path = tmp_path / "lora.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.get_layer("words")
    # The file's table holds the trained delta: the outputs are the same.
    np.testing.assert_allclose(loaded.predict(ids, verbose=0), model.predict(ids, verbose=0),
                               rtol=1e-5, atol=1e-6)
    a, b = layer.lora_embeddings_a.numpy(), layer.lora_embeddings_b.numpy()
    np.testing.assert_array_equal(b, np.zeros((2, 4)))
    assert np.abs(a).min() > 0 and a.std() > 0  # he_uniform values, not zeros
    # Only the LoRA matrices train: the table is frozen; the outputs move
    # only if the delta's gradients are not zero.
    before_table = layer._embeddings.numpy()
    loaded.get_layer(index=2).trainable = False  # Dense frozen.
    loaded.compile(keras.optimizers.SGD(0.5), "mse")
    before = loaded.predict(ids, verbose=0)
    loaded.fit(ids, y, epochs=2, verbose=0)
    after = loaded.predict(ids, verbose=0)
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_array_equal(layer._embeddings.numpy(), before_table)
