"""Shared fixtures."""

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The benchmark tests read TensorFlow's CPU allocator statistics, which only its
# BFC allocator keeps on every machine; chosen when TensorFlow starts.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_embed  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
# The scripts that wrote the fixtures are not tests, and need the tools that
# wrote them (gensim, tf-keras): `--doctest-modules` must not import them.
collect_ignore = ["fixtures"]


def write_with_tf_keras(script, out, timeout=600):
    """Runs the writer `tests/fixtures/<script>`, which has tf-keras write its
    files into `out`, in a process of its own (tf-keras and Keras 3 do not
    share one); returns `out`."""
    subprocess.run([sys.executable, os.path.join(FIXTURES, script), str(out)],
                   check=True, capture_output=True, timeout=timeout)
    return out


def pytest_configure(config):
    # CONTRIBUTING.md, "Comparing numbers in tests": the tests marked so are
    # run a second time with other kernels, as another CPU would pick.
    config.addinivalue_line(
        "markers",
        "cross_kernel: compares with numbers stored on another machine or computed by "
        "another kernel (tf-keras, XLA); CI reruns these with TF_ENABLE_ONEDNN_OPTS=0",
    )
    config.addinivalue_line(
        "markers",
        "matrix: the Keras 2 conversion matrix, files written by tf-keras at test time "
        "(a few minutes; run with the rest, deselect with -m 'not matrix')",
    )


@pytest.fixture
def policy():
    """Sets a global dtype policy for one test, then restores float32."""

    def set_policy(name):
        keras.config.set_dtype_policy(name)

    yield set_policy
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def layer_pair(input_dim, output_dim, rng, **kwargs):
    """Our layer and stock's, built, sharing one random table."""
    ours = keras_embed.Embedding(input_dim, output_dim, **kwargs)
    stock = keras.layers.Embedding(input_dim, output_dim, **kwargs)
    ours.build()
    stock.build()
    table = rng.normal(size=(input_dim, output_dim)).astype("float32")
    ours.embeddings.assign(table)
    stock.embeddings.assign(table)
    return ours, stock
