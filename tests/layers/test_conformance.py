"""Keras's own Embedding test suite, run against `keras_embed.Embedding`.

The suite is read at test time from the installed keras
(`keras/src/layers/core/embedding_test.py`, not copied here). Its module
imports `keras.src.layers` as `layers`; we replace that name with a module
whose `Embedding` is ours, so every `layers.Embedding` in it, including the
subclass that `test_quantize_on_subclass` defines, is `keras_embed.Embedding`.
Its test case is then collected here as `EmbeddingTest` (51 cases with
Keras 3.15.1).

Where a case cannot pass as written, its override below says why and runs
the closest honest form of it.
"""

import importlib.util
import os
import types
from unittest import mock

import keras
import pytest
import tensorflow as tf

import keras_embed

STOCK_SUITE = os.path.join(
    os.path.dirname(keras.__file__), "src", "layers", "core", "embedding_test.py"
)

if not os.path.exists(STOCK_SUITE) and os.environ.get("CI") != "true":
    # Some keras wheels (3.14, for one) ship without their tests. CI installs
    # one that has them (3.15.1), and there a missing suite fails the run.
    pytest.skip(
        f"keras {keras.__version__} is installed without its tests "
        f"({STOCK_SUITE} is missing)",
        allow_module_level=True,
    )


def _load_stock_suite():
    spec = importlib.util.spec_from_file_location(
        "keras_stock_embedding_test", STOCK_SUITE
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _LayersWithOurEmbedding(types.ModuleType):
    """Keras's layers, except that `Embedding` is `keras_embed.Embedding`."""

    Embedding = keras_embed.Embedding

    def __getattr__(self, name):
        return getattr(keras.layers, name)


stock_suite = _load_stock_suite()
stock_suite.layers = _LayersWithOurEmbedding("layers")


def _whole_valid_ids(shape, *args, **kwargs):
    """Stands in for `tf.random.normal` in the export check: valid ids."""
    return tf.random.uniform(shape, 0, 10, dtype="int32")


def _stock_build_refused(*args, **kwargs):
    raise AssertionError("stock keras.layers.Embedding was built")


class EmbeddingTest(stock_suite.EmbeddingTest):
    """Keras's `EmbeddingTest`, with `layers.Embedding` bound to ours."""

    def setUp(self):
        # Every case runs on our layer: building stock's fails the case, and
        # the binding is checked before it starts.
        super().setUp()
        assert stock_suite.layers.Embedding is keras_embed.Embedding
        guard = mock.patch.object(
            keras.layers.Embedding, "build", side_effect=_stock_build_refused
        )
        guard.start()
        self.addCleanup(guard.stop)

    # The stock body, unchanged, but for one input. Its export check feeds
    # `tf.random.normal((32, 3))` as ids: stock truncates them toward zero and
    # wraps the negative ones to the last rows. Our layer refuses ids that are
    # not whole numbers in [0, input_dim) (keras_embed/ids.py), by design, so
    # there the check gets random valid ids; everything else runs as written.
    #
    # These two cases also assert that one epoch (2 SGD steps, from
    # lora_embeddings_b = 0) moves lora_embeddings_a. A's only update, on the
    # second step, is about 1e-7 against values near 0.5, a few float32
    # ulps: over 12 seeds the largest change was 0.9e-7 to 5.4e-7, and an
    # unlucky draw of the unseeded ids and targets rounds it to nothing (seen
    # in full runs; stock's layer computes the same update). So they run seeded.
    def test_quantize_lora_integration_int8(self):
        keras.utils.set_random_seed(0)
        with mock.patch.object(tf.random, "normal", _whole_valid_ids):
            super().test_quantize_lora_integration_int8()

    def test_quantize_lora_integration_int4(self):
        keras.utils.set_random_seed(0)
        with mock.patch.object(tf.random, "normal", _whole_valid_ids):
            super().test_quantize_lora_integration_int4()


@pytest.mark.parametrize("name", ["test_correctness", "test_sparse", "test_masking"])
def test_a_case_run_on_stock_layer_fails(name, monkeypatch):
    """The guard in `setUp` covers every case: with the binding broken
    (stock's layer in place of ours), any case fails."""
    monkeypatch.setattr(stock_suite.layers, "Embedding", keras.layers.Embedding, raising=False)
    result = EmbeddingTest(name).run()
    assert not result.wasSuccessful()
    (failure,) = result.failures + result.errors
    assert "AssertionError" in failure[1]
    monkeypatch.undo()
    assert EmbeddingTest(name).run().wasSuccessful()


def test_every_stock_case_is_collected(request):
    """pytest collects each of the suite's cases, under its own name, as a
    case of our class (whatever `-k` selects from them)."""
    stock_cases = {
        name for name in dir(stock_suite.EmbeddingTest) if name.startswith("test")
    }
    this_file = request.node.parent  # This module, as pytest collected it.
    (our_class,) = [node for node in this_file.collect() if node.name == "EmbeddingTest"]
    collected = {case.name for case in our_class.collect()}
    assert collected == stock_cases
    assert len(collected) >= 51
