"""Training under `tf.distribute` gives the numbers one device gives.

The distributed runs happen in child processes (distributed_worker.py): one
with `MirroredStrategy` over 2 logical CPU devices, and two workers of a
`MultiWorkerMirroredStrategy` cluster on 127.0.0.1. This process, which has
one CPU device, makes the single-device runs they are compared with.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import distributed_worker as worker
import keras_embed

WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIMIZERS = worker.OPTIMIZERS
ONE_DEVICE = tf.distribute.get_strategy()  # the default: no distribution
# Tables trained on 2 replicas against one device: the replicas' gradients
# are all-reduced, summed in another order than one device sums them, over 8
# steps, in a table of values about 1. An absolute tolerance (rtol=0): the
# values are of one scale, and training moves them by more than 100 times it.
TOLERANCE = 1e-5


def _environment(**extra):
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    return {
        **os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": path, **extra
    }


def _tail(path, characters=4000):
    with open(path, errors="replace") as file:
        return file.read()[-characters:]


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """Runs the `MirroredStrategy` checks once; returns their arrays and the
    folder holding the files saved there."""
    out = tmp_path_factory.mktemp("mirrored")
    result = subprocess.run(
        [sys.executable, WORKER, "mirrored", str(out)],
        capture_output=True, text=True, timeout=300, env=_environment(),
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    with np.load(out / "mirrored.npz") as arrays:
        return dict(arrays), out


@pytest.fixture(scope="module")
def multi_worker(tmp_path_factory):
    """Starts 2 workers of one cluster on loopback ports; returns each
    worker's arrays. Gives them 240 s in all, and kills what is left."""
    out = tmp_path_factory.mktemp("multi_worker")
    cluster = {
        "worker": [f"127.0.0.1:{worker.free_loopback_port()}" for _ in range(2)]
    }
    processes, logs = [], []
    try:
        for index in range(2):
            config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            logs.append(out / f"worker{index}.log")
            with open(logs[-1], "w") as log:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, WORKER, "multi_worker",
                         str(out / f"worker{index}.npz")],
                        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                        env=_environment(TF_CONFIG=json.dumps(config)),
                    )
                )
        for process, log in zip(processes, logs):
            try:
                process.wait(timeout=240)
            except subprocess.TimeoutExpired:
                pytest.fail(f"worker timed out after 240 s:\n{_tail(log)}")
            assert process.returncode == 0, _tail(log)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    results = []
    for index in range(2):
        with np.load(out / f"worker{index}.npz") as arrays:
            results.append(dict(arrays))
    return results


def _assert_replicas_match_one_device(replica_tables, one_device_table):
    """Every replica's copy of the table equals the one-device table, and
    training moved it (so the comparison is not of two initial tables)."""
    assert replica_tables.shape == (2, worker.VOCABULARY, worker.DIM)
    for table in replica_tables:
        np.testing.assert_allclose(table, one_device_table, rtol=0, atol=TOLERANCE)
    moved = np.abs(one_device_table - worker.initial_weights()[0]).max()
    assert moved > 100 * TOLERANCE


def _one_device_table(model):
    return model.get_layer("table").embeddings.numpy()


# MirroredStrategy on 2 logical CPU devices


def test_mirrored_strategy_runs_two_replicas(mirrored):
    arrays, _ = mirrored
    assert int(arrays["replicas"]) == 2
    # Each replica holds its own copy of the table.
    assert arrays["fit/sgd"].shape == (2, worker.VOCABULARY, worker.DIM)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_fit_matches_one_device(mirrored, optimizer):
    arrays, _ = mirrored
    expected = _one_device_table(worker.train_with_fit(ONE_DEVICE, optimizer))
    _assert_replicas_match_one_device(arrays[f"fit/{optimizer}"], expected)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_custom_training_loop_matches_one_device(mirrored, optimizer):
    arrays, _ = mirrored
    model = worker.train_with_custom_loop(ONE_DEVICE, optimizer)
    _assert_replicas_match_one_device(
        arrays[f"loop/{optimizer}"], _one_device_table(model)
    )


def _one_device_duplicate_ids_step(optimizer_name):
    """The step of `worker.duplicate_ids_step` as one batch on one device:
    ids `[1, 2, 1, 1]` with loss weights `[1, 1, 10, 10]`. Returns the
    table and the optimizer's state."""
    layer = keras_embed.Embedding(worker.VOCABULARY, worker.DIM)
    layer.build()
    layer.embeddings.assign(worker.initial_weights()[0])
    optimizer = worker.make_optimizer(optimizer_name)
    with tf.GradientTape() as tape:
        vectors = layer(tf.constant([[1, 2, 1, 1]]))
        loss = tf.reduce_sum(vectors * tf.constant([1.0, 1.0, 10.0, 10.0])[:, None])
    gradients = tape.gradient(loss, [layer.embeddings])
    optimizer.apply_gradients(zip(gradients, [layer.embeddings]))
    return layer.embeddings.numpy(), worker.optimizer_state(optimizer)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_duplicate_ids_in_different_replicas_sum(mirrored, optimizer):
    arrays, _ = mirrored
    # What `update_step` received on each of the 2 devices: the gradient
    # summed over replicas stays sparse, both replicas' rows gathered, not a
    # dense (VOCABULARY, DIM) tensor. LazyAdam sums a replica's repeated ids
    # before the all-reduce (replica 1's two rows 1 become one); Keras's
    # optimizers send them as they are.
    if optimizer == "lazy_adam":
        indices, weights = [1, 2, 1], [1.0, 1.0, 20.0]
    else:
        indices, weights = [1, 2, 1, 1], [1.0, 1.0, 10.0, 10.0]
    np.testing.assert_array_equal(
        arrays[f"duplicates/{optimizer}/indices"], [indices] * 2
    )
    np.testing.assert_array_equal(
        arrays[f"duplicates/{optimizer}/values"],
        [np.repeat(np.array(weights)[:, None], worker.DIM, axis=1)] * 2,
    )
    tables = arrays[f"duplicates/{optimizer}"]
    expected, expected_state = _one_device_duplicate_ids_step(optimizer)
    for table in tables:
        np.testing.assert_allclose(table, expected, rtol=0, atol=1e-6)
    # The moments too: Adam's first step barely depends on the gradient's
    # size, they do (row 1's momentum is 0.1 * 21, not 0.1 * 20).
    np.testing.assert_allclose(
        arrays[f"duplicates/{optimizer}/optimizer"], expected_state,
        rtol=0, atol=1e-5,
    )
    change = tables[0] - worker.initial_weights()[0]
    np.testing.assert_array_equal(change[3:], 0.0)  # rows not looked up
    np.testing.assert_array_equal(change[0], 0.0)
    if optimizer == "sgd":
        # Row 1's gradient: 1 (replica 0) + 10 + 10 (replica 1); row 2's: 1.
        np.testing.assert_allclose(change[1], -0.1 * 21, atol=1e-6)
        np.testing.assert_allclose(change[2], -0.1 * 1, atol=1e-6)
    if optimizer == "lazy_adam":
        # First Adam step on the summed gradient g: -lr * g / (|g| + eps'),
        # with eps' = epsilon / sqrt(1 - beta_2).
        epsilon = 1e-7 / np.sqrt(1 - 0.999)
        np.testing.assert_allclose(change[1], -0.01 * 21 / (21 + epsilon), atol=1e-6)
        np.testing.assert_allclose(change[2], -0.01 * 1 / (1 + epsilon), atol=1e-6)


# Saving and loading in a strategy's scope, and on one device


def test_keras_file_saved_and_loaded_in_strategy_scope(mirrored):
    arrays, _ = mirrored
    saved = arrays["saved/table"]
    np.testing.assert_array_equal(arrays["keras/table"], saved)
    np.testing.assert_array_equal(arrays["keras/predictions"], arrays["saved/predictions"])
    np.testing.assert_array_equal(arrays["keras/optimizer"], arrays["saved/optimizer"])
    # The optimizer's state came back too: one more epoch gives the same table.
    np.testing.assert_allclose(
        arrays["keras/continued"], arrays["saved/continued"], rtol=0, atol=TOLERANCE
    )
    assert np.abs(arrays["saved/continued"] - saved).max() > 100 * TOLERANCE


def test_checkpoint_written_and_read_in_strategy_scope(mirrored):
    arrays, _ = mirrored
    np.testing.assert_array_equal(arrays["checkpoint/table"], arrays["saved/table"])
    np.testing.assert_array_equal(
        arrays["checkpoint/optimizer"], arrays["saved/optimizer"]
    )
    np.testing.assert_allclose(
        arrays["checkpoint/continued"], arrays["saved/continued"],
        rtol=0, atol=TOLERANCE,
    )


def _one_more_epoch(model):
    ids, targets = worker.training_data()
    model.fit(
        ids, targets, batch_size=worker.GLOBAL_BATCH, epochs=1, shuffle=False,
        verbose=0,
    )
    return _one_device_table(model)


def test_keras_file_trained_distributed_loads_on_one_device(mirrored):
    arrays, folder = mirrored
    model = keras.models.load_model(folder / "distributed.keras")
    assert type(model.get_layer("table")) is keras_embed.Embedding
    assert type(model.optimizer) is keras_embed.optimizers.LazyAdam
    np.testing.assert_array_equal(_one_device_table(model), arrays["saved/table"][0])
    # Same weights; the Dense's 12-term sums may round differently on 2
    # replicas (a batch of 1 each) than on one device: a few float32 ulps of
    # outputs and terms about 1 (rtol=1e-6, atol=1e-6 for outputs near 0).
    np.testing.assert_allclose(
        model.predict(worker.PROBE_IDS, verbose=0), arrays["saved/predictions"],
        rtol=1e-6, atol=1e-6,
    )
    np.testing.assert_array_equal(
        worker.optimizer_state(model.optimizer), arrays["saved/optimizer"]
    )
    np.testing.assert_allclose(
        _one_more_epoch(model), arrays["saved/continued"][0], rtol=0, atol=TOLERANCE
    )


def test_checkpoint_written_distributed_restores_on_one_device(mirrored):
    arrays, folder = mirrored
    model = worker.build_model()
    model.compile(
        optimizer=worker.make_optimizer("lazy_adam"),
        loss="mse",
    )
    model.optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    checkpoint.read(str(folder / "distributed_checkpoint")).assert_consumed()
    np.testing.assert_array_equal(_one_device_table(model), arrays["saved/table"][0])
    np.testing.assert_array_equal(
        worker.optimizer_state(model.optimizer), arrays["saved/optimizer"]
    )
    np.testing.assert_allclose(
        _one_more_epoch(model), arrays["saved/continued"][0], rtol=0, atol=TOLERANCE
    )


# MultiWorkerMirroredStrategy: 2 processes on 127.0.0.1


def test_multi_worker_cluster_has_two_workers(multi_worker):
    assert [int(arrays["worker"]) for arrays in multi_worker] == [0, 1]
    assert [int(arrays["replicas"]) for arrays in multi_worker] == [2, 2]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_multi_worker_custom_loop_matches_single_process(multi_worker, optimizer):
    first, second = (arrays[f"loop/{optimizer}"] for arrays in multi_worker)
    np.testing.assert_array_equal(first, second)  # identical, bit for bit
    model = worker.train_with_custom_loop(ONE_DEVICE, optimizer)
    expected = _one_device_table(model)
    np.testing.assert_allclose(first[0], expected, rtol=0, atol=TOLERANCE)
    assert np.abs(expected - worker.initial_weights()[0]).max() > 100 * TOLERANCE


def test_multi_worker_fit(multi_worker):
    """Keras 3.15's `fit` fails under `MultiWorkerMirroredStrategy` for every
    model (keras-team/keras#20585); this notices when it starts working."""
    errors = [str(arrays.get("fit/error", "")) for arrays in multi_worker]
    if all(errors):
        assert all("PerReplica" in error for error in errors), errors
        first_line = errors[0].splitlines()[0]
        pytest.xfail(f"Keras 3 fit under MultiWorkerMirroredStrategy: {first_line}")
    first, second = (arrays["fit"] for arrays in multi_worker)
    np.testing.assert_array_equal(first, second)
    expected = _one_device_table(
        worker.train_with_fit(ONE_DEVICE, "lazy_adam")
    )
    np.testing.assert_allclose(first[0], expected, rtol=0, atol=TOLERANCE)


# ParameterServerStrategy: the table split by rows over 2 parameter servers


@pytest.fixture(scope="module")
def parameter_server(tmp_path_factory):
    out = tmp_path_factory.mktemp("parameter_server") / "parameter_server.npz"
    result = subprocess.run(
        [sys.executable, WORKER, "parameter_server", str(out)],
        capture_output=True, text=True, timeout=180, env=_environment(),
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    with np.load(out) as arrays:
        return dict(arrays)


PARAMETER_SERVER_OPTIMIZERS = ("sgd", "lazy_adam")


def test_parameter_server_table_size_is_checked_per_shard(parameter_server):
    """With this machine's memory pretended to be 2 GB: a 3.1 GB table is
    refused outside the strategy, taken split in 2 shards of 1.5 GB (the
    coordinator holds none of it), and 6.1 GB in 2 shards is refused."""
    assert str(parameter_server["size_check/whole/6M"]).startswith(
        "Embedding layer 'huge': a table of (input_dim, output_dim) = (6000000, 128) "
        "float32 values needs 3.1 GB, more than the 2.0 GB of memory available."
    )
    assert str(parameter_server["size_check/sharded/6M"]) == "ok"
    assert str(parameter_server["size_check/sharded/12M"]) == (
        "Embedding layer 'huge': a table of (input_dim, output_dim) = (12000000, 128) "
        "float32 values split by rows into 2 shards (the ParameterServerStrategy's "
        "variable partitioner) needs 3.1 GB for its largest shard, more than the "
        "2.0 GB of memory available on this machine. Split it into more shards, or "
        "use a smaller input_dim or output_dim."
    )


@pytest.mark.parametrize("optimizer", PARAMETER_SERVER_OPTIMIZERS)
def test_parameter_server_strategy_splits_table_and_slots_by_rows(
    parameter_server, optimizer
):
    np.testing.assert_array_equal(parameter_server[f"{optimizer}/shard_rows"], [20, 20])
    # The table's 2 shards, then each slot next to its shard: LazyAdam's
    # two moments of shard 0 on server 0, those of shard 1 on server 1.
    expected = {"sgd": ["ps:0", "ps:1"], "lazy_adam": ["ps:0", "ps:1"] + ["ps:0"] * 2 + ["ps:1"] * 2}
    assert parameter_server[f"{optimizer}/devices"].tolist() == expected[optimizer]


@pytest.mark.parametrize("optimizer", PARAMETER_SERVER_OPTIMIZERS)
def test_parameter_server_strategy_trains_a_sharded_table(parameter_server, optimizer):
    change = parameter_server[f"{optimizer}/trained"] - worker.initial_weights()[0]
    # ids [[1, 39, 1]], loss sum(vectors): row 1 (first server) has gradient
    # 2, row 39 (second server) gradient 1. SGD (learning rate 0.1) moves them
    # by -0.2 and -0.1; LazyAdam's first step by -lr * g / (|g| + eps').
    epsilon = 1e-7 / np.sqrt(1 - 0.999)
    expected = np.zeros_like(change)
    if optimizer == "sgd":
        expected[1], expected[39] = -0.2, -0.1
    else:
        expected[1], expected[39] = -0.01 * 2 / (2 + epsilon), -0.01 / (1 + epsilon)
    np.testing.assert_allclose(change, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("optimizer", PARAMETER_SERVER_OPTIMIZERS)
@pytest.mark.parametrize("rank", [1, 2])
def test_parameter_server_lookup_reads_only_the_rows_it_needs(
    parameter_server, optimizer, rank
):
    """A row-sharded table pays off only if a lookup gathers rows from each
    shard (`ResourceGather`), not if it reads every shard whole
    (`ReadVariableOp`) and concatenates them into the full table."""
    key = f"{optimizer}/lookup_rank_{rank}"
    assert f"{key}/error" not in parameter_server, parameter_server.get(f"{key}/error")
    ops = [str(op) for op in parameter_server[f"{key}/ops"]]
    assert ops.count("ResourceGather") == 2, ops  # one per shard
    assert "ReadVariableOp" not in ops, ops
