"""Optimizers whose step costs as much as the batch, not the vocabulary."""

from keras_embed.layers.table_reads import is_updated_by_rows, mark_updated_by_rows
from keras_embed.optimizers.adagrad import Adagrad
from keras_embed.optimizers.ftrl import Ftrl
from keras_embed.optimizers.lazy_adam import LazyAdam
from keras_embed.optimizers.rows import RowSparseOptimizer, summed_duplicates
from keras_embed.optimizers.rowwise_adagrad import RowWiseAdagrad
from keras_embed.optimizers.sgd import SGD

__all__ = [
    "Adagrad",
    "Ftrl",
    "LazyAdam",
    "RowSparseOptimizer",
    "RowWiseAdagrad",
    "SGD",
    "is_updated_by_rows",
    "mark_updated_by_rows",
    "summed_duplicates",
]
