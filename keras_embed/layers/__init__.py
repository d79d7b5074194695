"""The layers, and their rules: shapes, ids, LoRA, quantization, config checks."""

from keras_embed.layers.embedding import Embedding

__all__ = ["Embedding"]
