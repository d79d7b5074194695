"""keras_embed: a drop-in `keras.layers.Embedding` for Keras 3."""

from keras_embed import optimizers
from keras_embed.layers import graph_errors
from keras_embed.layers import input_length
from keras_embed.layers.embedding import Embedding
from keras_embed.saving import load_errors
from keras_embed.saving.migration import swap, unswap

# What importing keras_embed changes outside the layer, all of it here (see
# README.md, "What importing `keras_embed` changes outside the layer").
# Importing a submodule (`keras_embed.layers.embedding`) runs this file
# first, so every import of the package installs them.
graph_errors.install()  # TensorFlow's graph errors: our id check's sentence first.
input_length.install_sequential_input(Embedding)  # keras.Sequential.add / build.
load_errors.install()  # keras.models.load_model, keras.saving.load_model.

__all__ = ["Embedding", "optimizers", "swap", "unswap"]
