"""Keras 2 (tf-keras) saved models, rebuilt as Keras 3 models with their
training: `.h5` files and SavedModel directories. Nothing of a file is run.

The walk, module by module:

- `directory`: checks a SavedModel directory and parses its records
  (`keras_metadata.pb`, `saved_model.pb`'s object graph);
- `configs`: Keras 2 model and training configs in Keras 3's forms (our
  Embedding, dtype policies, wrapped layers, optimizers and schedules);
- `checkpoint`: a directory's variables into the rebuilt model; `h5`: an
  `.h5` file's weights and optimizer weights;
- `preprocessing`: what preprocessing layers learned in `adapt`;
- `dynamic_embedding`: tf-keras's own `DynamicEmbedding`, as
  `keras_embed.DynamicEmbedding` with its keys' rows;
- `optimizer`: the training state (step count, slots, schedules' products,
  averages, loss scale);
- `saved_model`: `load_keras2_model`, the public entry for directories.

`read_model` is the one entry for both formats.

Example:

>>> from keras_embed.saving import keras2
>>> model, notes = keras2.read_model("old_model.h5")  # doctest: +SKIP
"""

import os

from keras_embed.saving.keras2 import h5
from keras_embed.saving.keras2 import saved_model
from keras_embed.saving.keras2.saved_model import load_keras2_model

__all__ = ["load_keras2_model", "read_model"]


def read_model(path, compile=True, directory=None):
    """The Keras 3 model in a Keras 2 `.h5` file or SavedModel directory,
    and notes (sentences) on what of it did not come along.

    Args:
        path: the file or directory.
        compile: whether to compile the model with its training config and
            give it the optimizer's state.
        directory: what `directory.read(path)` found, if it was read already.

    Raises:
        Keras2SavedModelError: for a directory that is not a Keras 2 model,
            or whose config or variables do not load.
    """
    if directory is not None or os.path.isdir(path):
        return saved_model.read_model(path, compile=compile, directory=directory)
    return h5.read_model(path, compile=compile)
