"""keras_embed: a drop-in `keras.layers.Embedding` for Keras 3."""

from keras_embed import load_errors  # Wraps keras.models.load_model.
from keras_embed import optimizers
from keras_embed.embedding import Embedding
from keras_embed.migration import swap, unswap

__all__ = ["Embedding", "optimizers", "swap", "unswap"]
