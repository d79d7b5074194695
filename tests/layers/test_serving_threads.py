"""A served model answers 8 threads calling at once with the results of
single-threaded calls; a thread's bad ids fail that thread alone."""

import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_embed

THREADS = 8
ROUNDS = 5


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(11)
    model = keras.Sequential(
        [keras_embed.Embedding(500, 16, mask_zero=True, input_length=20, name="words"),
         keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(4)]
    )
    model.compile("adam", "mse")
    return model


def _batches():
    rng = np.random.default_rng(5)
    return [rng.integers(0, 500, size=(32, 20)).astype("int32") for _ in range(THREADS)]


def _at_once(call, batches):
    """Each thread calls `call` on its batch ROUNDS times, all starting together.

    Fails if a thread is still running after 120 s of waiting for it.
    """
    results, errors = [[] for _ in batches], [None] * len(batches)
    start = threading.Barrier(len(batches))

    def work(index):
        start.wait()
        try:
            for _ in range(ROUNDS):
                results[index].append(np.asarray(call(batches[index])))
        except Exception as error:  # Reported to the test below.
            errors[index] = error

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [thread.is_alive() for thread in threads] == [False] * len(threads), "a thread hung"
    return results, errors


def _check_identical(call, batches):
    expected = [np.asarray(call(batch)) for batch in batches]
    results, errors = _at_once(call, batches)
    assert errors == [None] * len(batches)
    assert [len(got) for got in results] == [ROUNDS] * len(batches)
    for got, want in zip(results, expected):
        for result in got:
            np.testing.assert_array_equal(result, want)


def test_keras_model_called_from_8_threads(model):
    _check_identical(lambda ids: model(ids, training=False), _batches())


def test_keras_model_predict_on_batch_from_8_threads(model):
    model.predict_on_batch(_batches()[0])  # Builds the predict function once.
    _check_identical(model.predict_on_batch, _batches())


def test_exported_saved_model_from_8_threads(model, tmp_path):
    model.export(str(tmp_path / "served"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "served"))
    _check_identical(served.serve, _batches())


def test_bad_ids_fail_only_their_thread(model, tmp_path):
    model.export(str(tmp_path / "served"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "served"))
    batches = _batches()
    expected = [served.serve(batch).numpy() for batch in batches]
    batches[3] = batches[3].copy()
    batches[3][7, 4] = 500
    results, errors = _at_once(served.serve, batches)
    assert str(errors[3]).splitlines()[0] == (
        "Embedding layer 'words' received id 500, which is outside the valid range "
        "[0, input_dim) = [0, 500)."
    )
    for index, (got, want) in enumerate(zip(results, expected)):
        if index != 3:
            assert errors[index] is None
            assert len(got) == ROUNDS
            for result in got:
                np.testing.assert_array_equal(result, want)
