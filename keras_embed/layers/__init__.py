"""The layers, and their rules: shapes, ids, LoRA, quantization, config checks."""

from keras_embed.layers.dynamic_embedding import DynamicEmbedding
from keras_embed.layers.embedding import Embedding
from keras_embed.layers.embedding_bag import EmbeddingBag
from keras_embed.layers.looked_up_rows import LookedUpRowsRegularizer

__all__ = ["DynamicEmbedding", "Embedding", "EmbeddingBag", "LookedUpRowsRegularizer"]
