"""Keras callbacks of keras_embed."""

from keras_embed.callbacks.embedding_projector import EmbeddingProjector
from keras_embed.callbacks.embedding_projector import embedding_layers
from keras_embed.callbacks.embedding_projector import write_projector

__all__ = ["EmbeddingProjector", "embedding_layers", "write_projector"]
