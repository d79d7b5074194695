"""`keras_embed.saving.keras2.h5`: a Keras 2 .h5 file's optimizer state,
and what is said when it cannot be copied (the whole of it is then left)."""

import keras
import numpy as np
import pytest

import keras_embed
from keras_embed.saving.keras2 import h5 as keras2_h5


def compiled(optimizer):
    model = keras.Sequential([keras.Input((2,), dtype="int32"),
                              keras_embed.Embedding(5, 3, name="embedding"), keras.layers.Flatten(),
                              keras.layers.Dense(1, name="dense")])
    model.compile(optimizer, "mse")
    return model


def state(**changes):
    names = {"iteration:0": np.array(4, "int64"),
             "SGD/m/embedding/embeddings:0": np.full((5, 3), 0.5, "float32"),
             "SGD/m/dense/kernel:0": np.full((6, 1), 0.25, "float32"),
             "SGD/m/dense/bias:0": np.full((1,), 0.125, "float32")}
    return {**names, **changes}


def test_sgd_momentum_slots_and_step_count_are_copied():
    model = compiled(keras.optimizers.SGD(0.1, momentum=0.9))
    assert keras2_h5.assign_optimizer_state(model, state()) == []
    optimizer = model.optimizer
    assert int(optimizer.iterations) == 4
    assert [float(np.unique(m)[0]) for m in optimizer.momentums] == [0.5, 0.25, 0.125]


@pytest.mark.parametrize("changes, reason", [
    ({"SGD/m/dense/kernel:0": np.zeros((7, 1), "float32")},
     "Keras 2's 'SGD/m/dense/kernel' has shape (7, 1), the model's slot (6, 1)"),
    ({"SGD/m/lstm/kernel:0": np.zeros((6, 1), "float32")},
     "Keras 3's SGD keeps nothing like Keras 2's 'SGD/m/lstm/kernel'"),
    ({"SGD/dense/kernel/rms:0": np.zeros((6, 1), "float32")},  # a legacy RMSprop's
     "Keras 3's SGD keeps nothing like Keras 2's 'SGD/dense/kernel/rms'"),
])
def test_a_state_that_does_not_fit_is_dropped_whole_and_said(changes, reason):
    model = compiled(keras.optimizers.SGD(0.1, momentum=0.9))
    notes = keras2_h5.assign_optimizer_state(model, state(**changes))
    assert notes == [f"the optimizer's state (slots, step count) was dropped: {reason}; "
                     "training resumes with a fresh optimizer"]
    assert int(model.optimizer.iterations) == 0
    assert not any(np.any(m.numpy()) for m in model.optimizer.momentums)


def test_an_optimizer_that_keeps_other_slots_is_said():
    model = compiled(keras.optimizers.Adafactor())
    assert keras2_h5.assign_optimizer_state(model, state()) == [
        "the optimizer's state (slots, step count) was dropped: Keras 3's Adafactor keeps "
        "nothing like Keras 2's 'SGD/m/embedding/embeddings'; training resumes with a fresh "
        "optimizer"]
