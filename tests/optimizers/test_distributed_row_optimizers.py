"""Adagrad, RowWiseAdagrad, Ftrl and SGD under MirroredStrategy on 2 logical
CPU devices give the numbers one device gives (as test_distributed.py shows
for LazyAdam). The distributed runs happen in a child process
(distributed_worker.py, mode `mirrored_rows`)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import distributed_worker as worker
import keras_embed

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPTIMIZERS = worker.ROW_OPTIMIZERS
ONE_DEVICE = tf.distribute.get_strategy()
TOLERANCE = 1e-5  # As test_distributed.py's: all-reduced sums, tables of values about 1.


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    out = tmp_path_factory.mktemp("mirrored_rows")
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, WORKER, "mirrored_rows", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": path},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    with np.load(out / "mirrored_rows.npz") as arrays:
        return dict(arrays)


def _assert_replicas_match(replica_tables, one_device_table):
    assert replica_tables.shape == (2, worker.VOCABULARY, worker.DIM)
    for table in replica_tables:
        np.testing.assert_allclose(table, one_device_table, rtol=0, atol=TOLERANCE)
    moved = np.abs(one_device_table - worker.initial_weights()[0]).max()
    assert moved > 100 * TOLERANCE


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_fit_matches_one_device(mirrored, optimizer):
    assert int(mirrored["replicas"]) == 2
    model = worker.train_with_fit(ONE_DEVICE, optimizer)
    _assert_replicas_match(mirrored[f"fit/{optimizer}"], model.get_layer("table").embeddings.numpy())


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_duplicate_ids_in_different_replicas_sum(mirrored, optimizer):
    # A custom loop's step (`strategy.run`, `GradientTape`, then
    # `apply_gradients` in each replica). Replica 0 looks up [1, 2] with
    # weight 1, replica 1 [1, 1] with weight 10. Each replica sums its repeats before the all-reduce (replica 1's
    # two rows 1 become one of 20); `update_step` then sums row 1 across
    # replicas: 21, as on one device.
    np.testing.assert_array_equal(mirrored[f"duplicates/{optimizer}/indices"], [[1, 2, 1]] * 2)
    np.testing.assert_array_equal(
        mirrored[f"duplicates/{optimizer}/values"],
        [np.repeat(np.array([1.0, 1.0, 20.0])[:, None], worker.DIM, axis=1)] * 2,
    )
    layer = keras_embed.Embedding(worker.VOCABULARY, worker.DIM)
    layer.build()
    layer.embeddings.assign(worker.initial_weights()[0])
    one_device = worker.make_optimizer(optimizer)
    with tf.GradientTape() as tape:
        vectors = layer(tf.constant([[1, 2, 1, 1]]))
        loss = tf.reduce_sum(vectors * tf.constant([1.0, 1.0, 10.0, 10.0])[:, None])
    one_device.apply_gradients(zip(tape.gradient(loss, [layer.embeddings]), [layer.embeddings]))
    tables = mirrored[f"duplicates/{optimizer}"]
    for table in tables:
        np.testing.assert_allclose(table, layer.embeddings.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        mirrored[f"duplicates/{optimizer}/optimizer"], worker.optimizer_state(one_device),
        rtol=0, atol=1e-5,
    )
    change = tables[0] - worker.initial_weights()[0]
    np.testing.assert_array_equal(change[3:], 0.0)
    np.testing.assert_array_equal(change[0], 0.0)
    # By hand, row 1 (gradient 21 in every column) and row 2 (gradient 1):
    if optimizer in ("row_sgd", "row_sgd_momentum"):  # first step: -lr * g
        np.testing.assert_allclose(change[1], -0.1 * 21, atol=1e-5)
        np.testing.assert_allclose(change[2], -0.1 * 1, atol=1e-6)
    # float32 against float64 by hand: changes of about -0.1, a difference of
    # two tables' values about 1 (a few of their ulps: rtol=1e-5, atol=0).
    if optimizer == "adagrad":  # accumulator 0.1 + g**2
        np.testing.assert_allclose(change[1], -0.1 * 21 / np.sqrt(0.1 + 441 + 1e-7), rtol=1e-5, atol=0)
    if optimizer == "rowwise_adagrad":  # accumulator mean(g**2) = g**2
        np.testing.assert_allclose(change[1], -0.1 * 21 / (21 + 1e-8), rtol=1e-5, atol=0)
