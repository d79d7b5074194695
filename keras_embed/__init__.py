"""keras_embed: a drop-in `keras.layers.Embedding` for Keras 3."""

import importlib.metadata

from keras_embed.layers.backend_check import check_backend

try:  # Written once, in pyproject.toml; pip puts it in the package's metadata.
    __version__ = importlib.metadata.version("keras-embed")
except importlib.metadata.PackageNotFoundError:  # A source tree, not installed.
    __version__ = "unknown"

check_backend()  # TensorFlow's backend only: one clear error, here, under any other.

from keras_embed import callbacks  # noqa: E402
from keras_embed import optimizers  # noqa: E402
from keras_embed import pretrained  # noqa: E402
from keras_embed.layers import graph_errors  # noqa: E402
from keras_embed.layers import input_length  # noqa: E402
from keras_embed.layers import jit_default  # noqa: E402
from keras_embed.layers import table_reads  # noqa: E402
from keras_embed.layers.dynamic_embedding import DynamicEmbedding  # noqa: E402
from keras_embed.layers.embedding import Embedding  # noqa: E402
from keras_embed.layers.embedding_bag import EmbeddingBag  # noqa: E402
from keras_embed.layers.looked_up_rows import LookedUpRowsRegularizer  # noqa: E402
from keras_embed.saving import load_errors  # noqa: E402
from keras_embed.saving.keras2 import load_keras2_model  # noqa: E402
from keras_embed.saving.migration import swap, unswap  # noqa: E402

# What importing keras_embed changes outside the layer, all of it here (see
# docs/importing.md).
# Importing a submodule (`keras_embed.layers.embedding`) runs this file
# first, so every import of the package installs them.
graph_errors.install()  # TensorFlow's graph errors: our id check's sentence first.
input_length.install_sequential_input(Embedding)  # keras.Sequential.add / build.
load_errors.install()  # keras.models.load_model, keras.saving.load_model.
jit_default.install()  # Keras's jit_compile="auto": no XLA for a model with our layer.
table_reads.install()  # Keras's optimizers: a row write marks our table read by rows.

# Modules kept at their paths from before the layout moved (each says where
# its code lives now), imported on first use: `keras_embed.migration` after
# a bare `import keras_embed`, without a public name here.
_COMPATIBILITY_MODULES = ("migration",)


def __getattr__(name):
    if name in _COMPATIBILITY_MODULES:
        return importlib.import_module(f"keras_embed.{name}")
    raise AttributeError(f"module 'keras_embed' has no attribute {name!r}")


__all__ = [
    "DynamicEmbedding", "Embedding", "EmbeddingBag", "LookedUpRowsRegularizer", "callbacks", "load_keras2_model", "optimizers",
    "pretrained", "swap", "unswap",
]
