"""EmbeddingBag under `tf.distribute`: MirroredStrategy on 2 logical CPU
devices and the parameter-server strategy (2 workers, 2 servers, the table
split by rows) give one device's numbers. The distributed runs happen in
child processes (bag_distributed_worker.py), as tests/optimizers/
test_distributed.py does for the optimizers."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import bag_distributed_worker as worker
import keras_embed

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bag_distributed_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ONE_DEVICE = tf.distribute.get_strategy()
# All-reduced sums of a few gradients against one device's sums, over 8
# steps, tables of values about 1 (as test_distributed.py's).
TOLERANCE = 1e-5


def _run(mode, tmp_path_factory, timeout):
    out = tmp_path_factory.mktemp(mode) / f"{mode}.npz"
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, WORKER, mode, str(out)], capture_output=True, text=True,
        timeout=timeout, cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": path})
    assert result.returncode == 0, result.stderr[-4000:]
    with np.load(out) as arrays:
        return dict(arrays)


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    return _run("mirrored", tmp_path_factory, 300)


@pytest.fixture(scope="module")
def parameter_server(tmp_path_factory):
    return _run("parameter_server", tmp_path_factory, 180)


def _one_device(how, kind, name):
    train = worker.train_with_fit if how == "fit" else worker.train_with_custom_loop
    return train(ONE_DEVICE, kind, name).get_layer("bags").embeddings.numpy()


@pytest.mark.parametrize("name", worker.OPTIMIZERS)
@pytest.mark.parametrize("kind", worker.KINDS)
@pytest.mark.parametrize("how", ["fit", "loop"])
def test_mirrored_gives_one_devices_numbers(mirrored, how, kind, name):
    key = f"{how}/{kind}/{name}"
    if how == "fit" and kind == "ragged":
        # Keras's fit cannot split ragged inputs between replicas, for any
        # layer (stock Embedding too): it fails before the layer is called.
        assert str(mirrored[f"{key}/error"]) == (
            "AttributeError: 'RaggedTensor' object has no attribute 'device'")
        return
    assert f"{key}/error" not in mirrored, str(mirrored.get(f"{key}/error"))
    assert int(mirrored["replicas"]) == 2
    expected = _one_device(how, kind, name)
    assert mirrored[key].shape == (2, worker.VOCABULARY, worker.DIM)
    for table in mirrored[key]:
        np.testing.assert_allclose(table, expected, rtol=0, atol=TOLERANCE)
    assert np.abs(expected - worker.initial_weights()[0]).max() > 100 * TOLERANCE
    # Keras's SGD marked the table at its first row write, as LazyAdam at build.
    assert bool(mirrored[f"{key}/row_reads"])


@pytest.mark.parametrize("name", worker.OPTIMIZERS)
@pytest.mark.parametrize("kind", worker.KINDS)
def test_parameter_server_trains_a_sharded_bag_table(parameter_server, kind, name):
    key = f"{kind}/{name}"
    assert f"{key}/error" not in parameter_server, str(parameter_server.get(f"{key}/error"))
    np.testing.assert_array_equal(parameter_server[f"{key}/shard_rows"], [20, 20])
    layer = keras_embed.EmbeddingBag(worker.VOCABULARY, worker.DIM,
                                     mask_zero=kind == "dense_mask_zero")
    layer.build()
    layer.embeddings.assign(worker.initial_weights()[0])
    optimizer = worker.make_optimizer(name)
    ids = (tf.ragged.constant([[1, 39], [1, 1]]) if kind == "ragged"
           else tf.constant([[1, 39, 0], [1, 1, 0]] if kind == "dense_mask_zero"
                            else [[1, 39, 2], [1, 1, 2]]))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(ids))
    optimizer.apply_gradients([(tape.gradient(loss, layer.embeddings.value), layer.embeddings)])
    expected = layer.embeddings.numpy()
    # One step of the same sums of two or three terms, gathered per shard:
    # a few ulps of values about 1 (rtol), atol for the rows near 0.
    np.testing.assert_allclose(parameter_server[f"{key}/trained"], expected,
                               rtol=1e-6, atol=1e-6)
    assert not np.array_equal(expected, worker.initial_weights()[0])
