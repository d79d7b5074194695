"""Optimizers whose step costs as much as the batch, not the vocabulary."""

from keras_embed.layers.table_reads import is_updated_by_rows, mark_updated_by_rows
from keras_embed.optimizers.lazy_adam import LazyAdam
from keras_embed.optimizers.rows import summed_duplicates

__all__ = ["LazyAdam", "is_updated_by_rows", "mark_updated_by_rows", "summed_duplicates"]
