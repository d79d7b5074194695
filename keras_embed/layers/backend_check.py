"""keras_embed runs on Keras's TensorFlow backend only.

The layer looks ids up and checks them with TensorFlow ops (`tf.gather`, an
`Assert` that travels with the graph, `tf.RaggedTensor` and
`tf.SparseTensor` ids). Under another backend (`KERAS_BACKEND=jax`, `torch`,
`numpy`, `openvino`) they fail deep inside the call ("'str' object has no
attribute '_error_repr'" under JAX, "Cannot convert the argument
`type_value`: torch.int64 to a TensorFlow DType" under PyTorch), so
`import keras_embed` and the layer's constructor refuse at once instead.

Example:

>>> check_backend("tensorflow")
>>> try:
...     check_backend("jax")
... except ImportError as error:
...     print(error)
keras_embed needs Keras's TensorFlow backend, but Keras is running with the 'jax' backend: set KERAS_BACKEND=tensorflow before importing keras.
"""

import keras


def check_backend(backend=None):
    """Raises `ImportError` unless the backend is "tensorflow".

    Args:
        backend: the backend's name; defaults to `keras.backend.backend()`.
    """
    if backend is None:
        backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ImportError(
            "keras_embed needs Keras's TensorFlow backend, but Keras is "
            f"running with the '{backend}' backend: set "
            "KERAS_BACKEND=tensorflow before importing keras."
        )
