"""`keras_embed.saving.keras2.preprocessing`: a Discretization given Keras
2's adapted summary gets the bins `adapt` gives."""

import keras
import numpy as np

from keras_embed.saving.keras2 import preprocessing as keras2_preprocessing

DATA = np.array([[0.5, 3.0], [1.5, -2.0], [2.5, 0.0], [-1.0, 4.0], [7.0, 1.0]], "float32")


def test_a_summary_gives_the_bins_adapt_gives():
    adapted = keras.layers.Discretization(num_bins=3)
    adapted.adapt(DATA)
    loaded = keras.layers.Discretization(num_bins=3)  # As Keras 3 rebuilds it: no bins.
    assert loaded.bin_boundaries is None
    keras2_preprocessing.set_discretization_summary(loaded, adapted.summary)
    assert loaded.bin_boundaries == adapted.bin_boundaries
    np.testing.assert_array_equal(loaded(DATA), adapted(DATA))


def test_given_bins_are_kept():
    layer = keras.layers.Discretization(bin_boundaries=[0.0, 1.0])
    keras2_preprocessing.set_discretization_summary(layer, np.array([[5.0], [1.0]], "float32"))
    assert layer.bin_boundaries == [0.0, 1.0]
