"""keras_embed needs Keras's TensorFlow backend: under any other it refuses
at import and at construction, with one sentence naming the backend."""

import importlib.util
import os
import subprocess
import sys

import keras
import pytest

import keras_embed

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _message(backend):
    return (
        f"keras_embed needs Keras's TensorFlow backend, but Keras is running "
        f"with the '{backend}' backend: set KERAS_BACKEND=tensorflow before "
        "importing keras."
    )


@pytest.mark.parametrize("backend", ["jax", "torch", "numpy", "openvino"])
def test_the_check_names_the_backend(backend):
    from keras_embed.layers.backend_check import check_backend

    with pytest.raises(ImportError) as error:
        check_backend(backend)
    assert str(error.value) == _message(backend)
    check_backend("tensorflow")  # No error.


def test_construction_under_another_backend_refuses(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ImportError) as error:
        keras_embed.Embedding(10, 2)
    assert str(error.value) == _message("jax")


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_import_under_keras_backend_jax_refuses():
    environment = {**os.environ, "KERAS_BACKEND": "jax",
                   "PYTHONPATH": os.pathsep.join([ROOT, *sys.path])}
    result = subprocess.run([sys.executable, "-c", "import keras_embed"], capture_output=True,
                            text=True, timeout=120, env=environment, cwd=ROOT)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"ImportError: {_message('jax')}"
