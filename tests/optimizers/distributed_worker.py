"""Training under `tf.distribute`, run in child processes by test_distributed.py.

A process can split its CPU into logical devices only before TensorFlow
initializes them, which a pytest process has long done; so the distributed
runs happen here, in fresh processes, and write what they found to an `.npz`
file. The test imports the same functions to make the single-device runs it
compares them with.

    python tests/optimizers/distributed_worker.py mirrored OUT_DIR
    python tests/optimizers/distributed_worker.py mirrored_rows OUT_DIR
    TF_CONFIG='{...}' python tests/optimizers/distributed_worker.py multi_worker OUT_FILE
    python tests/optimizers/distributed_worker.py parameter_server OUT_FILE
"""

import json
import os
import socket
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_embed  # noqa: E402
from keras_embed.optimizers import LazyAdam  # noqa: E402

VOCABULARY = 40
DIM = 4
LENGTH = 3
GLOBAL_BATCH = 8
EXAMPLES = 32  # 4 steps an epoch
EPOCHS = 2
OPTIMIZERS = ("sgd", "adam", "lazy_adam")
# keras_embed's other row-sparse optimizers (`python ... mirrored_rows OUT_DIR`).
ROW_OPTIMIZERS = ("adagrad", "rowwise_adagrad", "ftrl", "row_sgd", "row_sgd_momentum")


def make_optimizer(name):
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=0.1)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=0.01)
    if name == "lazy_adam":
        return LazyAdam(learning_rate=0.01)
    if name == "adagrad":
        return keras_embed.optimizers.Adagrad(learning_rate=0.1)
    if name == "rowwise_adagrad":
        return keras_embed.optimizers.RowWiseAdagrad(learning_rate=0.1)
    if name == "ftrl":
        return keras_embed.optimizers.Ftrl(learning_rate=0.1, l1_regularization_strength=0.01)
    if name == "row_sgd":
        return keras_embed.optimizers.SGD(learning_rate=0.1)
    if name == "row_sgd_momentum":
        return keras_embed.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    raise ValueError(f"Unknown optimizer name: {name!r}.")


def training_data():
    """Ids drawn from the first 12 of 40 rows: every batch repeats ids, within
    each replica's half and across the halves; 28 rows are never looked up."""
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 12, size=(EXAMPLES, LENGTH)).astype("int32")
    targets = rng.normal(size=(EXAMPLES, 1)).astype("float32")
    return ids, targets


def initial_weights():
    rng = np.random.default_rng(3)
    return [
        rng.normal(size=(VOCABULARY, DIM)).astype("float32"),
        rng.normal(size=(LENGTH * DIM, 1)).astype("float32") * 0.3,
        np.zeros((1,), "float32"),
    ]


def build_model():
    """Embedding -> Flatten -> Dense, with fixed initial weights. Call it in
    the strategy's scope."""
    ids = keras.Input(shape=(LENGTH,), dtype="int32", name="ids")
    vectors = keras_embed.Embedding(VOCABULARY, DIM, name="table")(ids)
    score = keras.layers.Dense(1, name="score")(keras.layers.Flatten()(vectors))
    model = keras.Model(ids, score)
    model.set_weights(initial_weights())
    return model


def train_with_fit(strategy, optimizer_name):
    ids, targets = training_data()
    with strategy.scope():
        model = build_model()
        model.compile(optimizer=make_optimizer(optimizer_name), loss="mse")
    model.fit(
        ids, targets, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False,
        verbose=0,
    )
    return model


def distributed_dataset(strategy):
    ids, targets = training_data()
    dataset = tf.data.Dataset.from_tensor_slices((ids, targets))
    dataset = dataset.batch(GLOBAL_BATCH)
    options = tf.data.Options()
    # Each worker of a multi-worker run takes its share of every batch.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return strategy.experimental_distribute_dataset(
        dataset.with_options(options)
    )


def train_with_custom_loop(strategy, optimizer_name):
    """The `tf.distribute` guide's loop: `GradientTape` in `strategy.run`,
    the loss averaged over the global batch."""
    with strategy.scope():
        model = build_model()
        optimizer = make_optimizer(optimizer_name)
        optimizer.build(model.trainable_variables)

    @tf.function
    def train_step(batch):
        def replica_step(ids, targets):
            with tf.GradientTape() as tape:
                predictions = model(ids, training=True)
                per_example = keras.losses.mean_squared_error(
                    targets, predictions
                )
                loss = tf.nn.compute_average_loss(
                    per_example, global_batch_size=GLOBAL_BATCH
                )
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(
                zip(gradients, model.trainable_variables)
            )

        strategy.run(replica_step, args=batch)

    for _ in range(EPOCHS):
        for batch in distributed_dataset(strategy):
            train_step(batch)
    return model


def replica_tables(variable):
    """The table `variable` (a `keras.Variable`) as held on each device: one
    array per replica."""
    values = getattr(variable.value, "values", (variable.value,))
    return np.stack([value.numpy() for value in values])


def record_sparse_gradients(optimizer):
    """Makes `optimizer` record every `tf.IndexedSlices` its `update_step`
    receives (after the all-reduce over replicas, once per device that holds
    the variable); returns the list of `(indices, values)` arrays that the
    steps append to."""
    received = []
    update_step = optimizer.update_step

    def record(indices, values):
        received.append((indices, values))
        return np.int32(0)

    def recording_update_step(gradient, variable, learning_rate):
        if isinstance(gradient, tf.IndexedSlices):
            tf.numpy_function(
                record, [gradient.indices, gradient.values], tf.int32,
                stateful=True,
            )
        return update_step(gradient, variable, learning_rate)

    optimizer.update_step = recording_update_step
    return received


def duplicate_ids_step(strategy, optimizer_name):
    """One step in which both replicas look up row 1: replica 0 the ids
    `[1, 2]`, replica 1 the ids `[1, 1]`, with loss `weight * sum(vectors)`,
    weight 1 on replica 0 and 10 on replica 1. Returns the tables on each
    replica, the optimizer's state (`optimizer_state`), and the sparse
    gradients its `update_step` received, as `(indices, values)` pairs."""
    with strategy.scope():
        layer = keras_embed.Embedding(VOCABULARY, DIM, name="table")
        layer.build()
        layer.embeddings.assign(initial_weights()[0])
        optimizer = make_optimizer(optimizer_name)
        optimizer.build([layer.embeddings])
    received = record_sparse_gradients(optimizer)
    ids = ([[1, 2]], [[1, 1]])
    weights = (1.0, 10.0)

    def replica_values(context):
        replica = context.replica_id_in_sync_group
        return tf.constant(ids[replica]), tf.constant(weights[replica])

    @tf.function
    def step(batch):
        def replica_step(ids, weight):
            with tf.GradientTape() as tape:
                loss = weight * tf.reduce_sum(layer(ids))
            (gradient,) = tape.gradient(loss, [layer.embeddings])
            optimizer.apply_gradients([(gradient, layer.embeddings)])

        strategy.run(replica_step, args=batch)

    step(strategy.experimental_distribute_values_from_function(replica_values))
    return replica_tables(layer.embeddings), optimizer_state(optimizer), received


PROBE_IDS = np.array([[0, 1, 2], [11, 5, 39]], "int32")


def save_and_reload(strategy, out_dir, optimizer_name):
    """Trains in the strategy's scope, saves (`.keras` and checkpoint), loads
    both back in the scope, and trains each copy one more epoch."""
    ids, targets = training_data()

    def one_more_epoch(model):
        model.fit(
            ids, targets, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False,
            verbose=0,
        )
        return replica_tables(model.get_layer("table").embeddings)

    results = {}
    with strategy.scope():
        model = build_model()
        model.compile(optimizer=make_optimizer(optimizer_name), loss="mse")
    model.fit(
        ids, targets, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False,
        verbose=0,
    )
    keras_path = os.path.join(out_dir, "distributed.keras")
    checkpoint_path = os.path.join(out_dir, "distributed_checkpoint")
    model.save(keras_path)
    tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(
        checkpoint_path
    )
    results["saved/table"] = replica_tables(model.get_layer("table").embeddings)
    results["saved/predictions"] = model.predict(PROBE_IDS, verbose=0)
    results["saved/optimizer"] = optimizer_state(model.optimizer)
    results["saved/continued"] = one_more_epoch(model)

    with strategy.scope():
        loaded = keras.models.load_model(keras_path)
    results["keras/table"] = replica_tables(loaded.get_layer("table").embeddings)
    results["keras/predictions"] = loaded.predict(PROBE_IDS, verbose=0)
    results["keras/optimizer"] = optimizer_state(loaded.optimizer)
    results["keras/continued"] = one_more_epoch(loaded)

    with strategy.scope():
        restored = build_model()
        restored.compile(optimizer=make_optimizer(optimizer_name), loss="mse")
        restored.optimizer.build(restored.trainable_variables)
    tf.train.Checkpoint(model=restored, optimizer=restored.optimizer).read(
        checkpoint_path
    ).assert_consumed()
    results["checkpoint/table"] = replica_tables(restored.get_layer("table").embeddings)
    results["checkpoint/optimizer"] = optimizer_state(restored.optimizer)
    results["checkpoint/continued"] = one_more_epoch(restored)
    return results


def optimizer_state(optimizer):
    """The optimizer's variables (iterations, moments of each weight), as
    one flat float64 array."""
    return np.concatenate(
        [np.ravel(v.numpy()).astype("float64") for v in optimizer.variables]
    )


def _two_cpu_mirrored_strategy():
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def _mirrored_runs(strategy, names, loop=True):
    """Fit, the custom loop (unless `loop` is false) and the duplicate-ids
    step (itself a custom loop's step) for each optimizer."""
    results = {}
    for name in names:
        model = train_with_fit(strategy, name)
        results[f"fit/{name}"] = replica_tables(model.get_layer("table").embeddings)
        if loop:
            model = train_with_custom_loop(strategy, name)
            results[f"loop/{name}"] = replica_tables(model.get_layer("table").embeddings)
        tables, state, received = duplicate_ids_step(strategy, name)
        results[f"duplicates/{name}"] = tables
        results[f"duplicates/{name}/optimizer"] = state
        results[f"duplicates/{name}/indices"] = np.stack([i for i, _ in received])
        results[f"duplicates/{name}/values"] = np.stack([v for _, v in received])
    return results


def run_mirrored(out_dir):
    strategy = _two_cpu_mirrored_strategy()
    results = {"replicas": np.array(strategy.num_replicas_in_sync)}
    results.update(_mirrored_runs(strategy, OPTIMIZERS))
    results.update(save_and_reload(strategy, out_dir, "lazy_adam"))
    np.savez(os.path.join(out_dir, "mirrored.npz"), **results)


def run_mirrored_rows(out_dir):
    """The mirrored runs of `ROW_OPTIMIZERS`."""
    strategy = _two_cpu_mirrored_strategy()
    results = {"replicas": np.array(strategy.num_replicas_in_sync)}
    # The duplicate-ids step is their custom loop (`strategy.run` with a
    # `GradientTape`): LazyAdam's full loop adds little but time here.
    results.update(_mirrored_runs(strategy, ROW_OPTIMIZERS, loop=False))
    np.savez(os.path.join(out_dir, "mirrored_rows.npz"), **results)


def run_multi_worker(out_file):
    """One worker of the cluster that `TF_CONFIG` describes."""
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=60
        )
    )
    worker = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    workers = strategy.num_replicas_in_sync
    results = {"replicas": np.array(workers), "worker": np.array(worker)}
    for name in OPTIMIZERS:
        model = train_with_custom_loop(strategy, name)
        results[f"loop/{name}"] = replica_tables(model.get_layer("table").embeddings)
    try:
        model = train_with_fit(strategy, "lazy_adam")
    except Exception as error:  # Keras 3 issue 20585: see docs/scaling.md.
        results["fit/error"] = np.array(f"{type(error).__name__}: {error}")
    else:
        results["fit"] = replica_tables(model.get_layer("table").embeddings)
    np.savez(out_file, **results)


def free_loopback_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_parameter_server(out_file):
    """A parameter-server cluster (2 workers, 2 parameter servers, all in
    this process, on loopback ports) with the table split by rows over the
    2 servers. Records the ops a lookup runs (or why it cannot), and trains
    one step with ids `[[1, 39, 1]]`."""
    cluster = tf.train.ClusterSpec(
        {
            job: [f"127.0.0.1:{free_loopback_port()}" for _ in range(2)]
            for job in ("worker", "ps")
        }
    )
    servers = [  # noqa: F841 (kept alive until the process ends)
        tf.distribute.Server(
            cluster, job_name=job, task_index=index, protocol="grpc"
        )
        for job in ("worker", "ps")
        for index in range(2)
    ]
    strategy = tf.distribute.experimental.ParameterServerStrategy(
        tf.distribute.cluster_resolver.SimpleClusterResolver(
            cluster, rpc_layer="grpc"
        ),
        variable_partitioner=(
            tf.distribute.experimental.partitioners.FixedShardsPartitioner(2)
        ),
    )
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    results = table_size_checks(strategy)
    for name in ("sgd", "lazy_adam"):
        with strategy.scope():
            layer = keras_embed.Embedding(VOCABULARY, DIM, name="table")
            layer.build()
            layer.embeddings.assign(initial_weights()[0])
            # Keras cannot take a gradient with respect to a variable made
            # of shards (it has no `handle`); its shards are plain variables.
            shards = layer.embeddings.value.variables
            optimizer = make_optimizer(name)
            optimizer.build(shards)
        results[f"{name}/shard_rows"] = np.array([s.shape[0] for s in shards])
        # The table's shards, then the optimizer's (a slot lives with its
        # shard), as "job:task".
        results[f"{name}/devices"] = np.array(
            [_job_and_task(v.device) for v in shards]
            + [_job_and_task(v.value.device) for v in optimizer.variables
               if v.shape.rank == 2]
        )
        for rank in (1, 2):
            key = f"{name}/lookup_rank_{rank}"
            try:
                results[f"{key}/ops"] = np.array(lookup_op_types(layer, rank))
            except Exception as error:
                results[f"{key}/error"] = np.array(f"{error!r}")
        coordinator.schedule(_parameter_server_step(strategy, layer, optimizer, shards))
        coordinator.join()
        results[f"{name}/trained"] = np.concatenate([s.numpy() for s in shards])
    np.savez(out_file, **results)


# Tables of 6M and 12M rows x 128 float32 (3.1 and 6.1 GB), against this
# machine's memory pretended to be 2 GB. Only constructors run: nothing is
# allocated.
SIZE_CHECKS = (("whole/6M", None, 6_000_000), ("sharded/6M", "strategy", 6_000_000),
               ("sharded/12M", "strategy", 12_000_000))


def table_size_checks(strategy):
    """The table-size check's verdicts: "ok", or its error's message."""
    from unittest import mock

    from keras_embed.layers import config_checks

    results = {}
    with mock.patch.object(config_checks, "available_memory_bytes", return_value=2 * 10**9):
        for key, where, rows in SIZE_CHECKS:
            scope = strategy.scope() if where else tf.distribute.get_strategy().scope()
            with scope:
                try:
                    keras_embed.Embedding(rows, 128, name="huge")
                    results[f"size_check/{key}"] = np.array("ok")
                except ValueError as error:
                    results[f"size_check/{key}"] = np.array(str(error))
    return results


def _job_and_task(device):
    spec = tf.DeviceSpec.from_string(device)
    return f"{spec.job}:{spec.task}"


def _parameter_server_step(strategy, layer, optimizer, shards):
    @tf.function
    def step():
        def replica_step():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(layer(tf.constant([[1, 39, 1]])))
            gradients = tape.gradient(loss, shards)
            optimizer.apply_gradients(zip(gradients, shards))

        strategy.run(replica_step)

    return step


def lookup_op_types(layer, rank):
    """The types of the ops a lookup of ids of this rank runs, in a graph."""
    spec = tf.TensorSpec([None] * rank, tf.int32)
    graph = tf.function(layer).get_concrete_function(spec).graph
    return sorted(op.type for op in graph.get_operations())


def main(argv):
    mode, out = argv[1], argv[2]
    if mode == "mirrored":
        run_mirrored(out)
    elif mode == "mirrored_rows":
        run_mirrored_rows(out)
    elif mode == "multi_worker":
        run_multi_worker(out)
    elif mode == "parameter_server":
        run_parameter_server(out)
    else:
        raise SystemExit(f"Unknown mode: {mode!r}.")


if __name__ == "__main__":
    main(sys.argv)
