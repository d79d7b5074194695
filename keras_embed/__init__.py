"""keras_embed: a drop-in `keras.layers.Embedding` for Keras 3."""

from keras_embed.embedding import Embedding

__all__ = ["Embedding"]
