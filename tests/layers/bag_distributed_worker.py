"""EmbeddingBag under `tf.distribute`, run in child processes by
test_embedding_bag_distributed.py (a process can split its CPU into logical
devices only before TensorFlow starts them; see
tests/optimizers/distributed_worker.py).

    python tests/layers/bag_distributed_worker.py mirrored OUT_FILE
    python tests/layers/bag_distributed_worker.py parameter_server OUT_FILE
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_embed  # noqa: E402
from keras_embed.layers.table_reads import is_updated_by_rows  # noqa: E402
from keras_embed.optimizers import LazyAdam  # noqa: E402

VOCABULARY, DIM, LENGTH = 40, 4, 5
GLOBAL_BATCH, EXAMPLES, EPOCHS = 8, 32, 2
OPTIMIZERS = ("sgd", "lazy_adam")
# Bags of dense ids (with padding: mask_zero), ragged ids, and no padding.
KINDS = ("dense_mask_zero", "dense", "ragged")


def make_optimizer(name):
    return keras.optimizers.SGD(0.1) if name == "sgd" else LazyAdam(0.01)


def training_data():
    """Bags of 0 to 5 ids from the first 12 rows (0 is padding where the bag
    masks it); ids repeat within and across replicas' halves."""
    rng = np.random.default_rng(5)
    ids = rng.integers(1, 12, size=(EXAMPLES, LENGTH)).astype("int32")
    lengths = rng.integers(0, LENGTH + 1, size=EXAMPLES)
    ids[np.arange(LENGTH)[None, :] >= lengths[:, None]] = 0
    targets = rng.normal(size=(EXAMPLES, 1)).astype("float32")
    return ids, targets


def initial_weights():
    rng = np.random.default_rng(3)
    return [rng.normal(size=(VOCABULARY, DIM)).astype("float32"),
            rng.normal(size=(DIM, 1)).astype("float32"), np.zeros((1,), "float32")]


def build_model(kind):
    ragged = kind == "ragged"
    ids = keras.Input(shape=(None,) if ragged else (LENGTH,), dtype="int32",
                      ragged=ragged, name="ids")
    bags = keras_embed.EmbeddingBag(VOCABULARY, DIM, mask_zero=kind == "dense_mask_zero",
                                    name="bags")(ids)
    model = keras.Model(ids, keras.layers.Dense(1, name="score")(bags))
    model.set_weights(initial_weights())
    return model


def inputs(kind, ids):
    if kind == "ragged":
        return tf.ragged.boolean_mask(tf.constant(ids), tf.constant(ids) != 0)
    return ids


def train_with_fit(strategy, kind, optimizer_name):
    ids, targets = training_data()
    with strategy.scope():
        model = build_model(kind)
        model.compile(optimizer=make_optimizer(optimizer_name), loss="mse")
    model.fit(inputs(kind, ids), targets, batch_size=GLOBAL_BATCH, epochs=EPOCHS,
              shuffle=False, verbose=0)
    return model


def train_with_custom_loop(strategy, kind, optimizer_name):
    """`strategy.run` of a GradientTape step on a distributed dataset."""
    ids, targets = training_data()
    with strategy.scope():
        model = build_model(kind)
        optimizer = make_optimizer(optimizer_name)
        optimizer.build(model.trainable_variables)
    dataset = tf.data.Dataset.from_tensor_slices((inputs(kind, ids), targets))
    dataset = strategy.experimental_distribute_dataset(dataset.batch(GLOBAL_BATCH))

    @tf.function
    def step(batch):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(model(x) - y)) / GLOBAL_BATCH
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))

        strategy.run(replica_step, args=batch)

    for _ in range(EPOCHS):
        for batch in dataset:
            step(batch)
    return model


def replica_tables(variable):
    """The table as each replica holds it: (replicas, VOCABULARY, DIM)."""
    inner = variable.value
    values = getattr(inner, "values", None) or (inner,)
    return np.stack([v.numpy() for v in values])


def run_mirrored(out_file):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {"replicas": np.array(strategy.num_replicas_in_sync)}
    for kind in KINDS:
        for name in OPTIMIZERS:
            for how, train in (("fit", train_with_fit), ("loop", train_with_custom_loop)):
                key = f"{how}/{kind}/{name}"
                try:
                    model = train(strategy, kind, name)
                except Exception as error:  # Recorded: the test shows it.
                    results[f"{key}/error"] = np.array(f"{type(error).__name__}: {error}")
                    continue
                table = model.get_layer("bags").embeddings
                results[key] = replica_tables(table)
                results[f"{key}/row_reads"] = np.array(is_updated_by_rows(table))
    np.savez(out_file, **results)


def run_parameter_server(out_file):
    """2 workers and 2 parameter servers in this process (loopback ports),
    the table split by rows over the servers; one step on bags
    `[[1, 39, 0], [1, 1, 0]]` for each kind."""
    import socket

    def port():
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    cluster = tf.train.ClusterSpec({job: [f"127.0.0.1:{port()}" for _ in range(2)]
                                    for job in ("worker", "ps")})
    servers = [tf.distribute.Server(cluster, job_name=job, task_index=index, protocol="grpc")  # noqa: F841
               for job in ("worker", "ps") for index in range(2)]
    strategy = tf.distribute.experimental.ParameterServerStrategy(
        tf.distribute.cluster_resolver.SimpleClusterResolver(cluster, rpc_layer="grpc"),
        variable_partitioner=tf.distribute.experimental.partitioners.FixedShardsPartitioner(2))
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    results = {}
    bags = [[1, 39, 0], [1, 1, 0]]
    for kind in KINDS:
        for name in OPTIMIZERS:
            key = f"{kind}/{name}"
            try:
                with strategy.scope():
                    layer = keras_embed.EmbeddingBag(
                        VOCABULARY, DIM, mask_zero=kind == "dense_mask_zero", name="bags")
                    layer.build()
                    layer.embeddings.assign(initial_weights()[0])
                    shards = layer.embeddings.value.variables
                    optimizer = make_optimizer(name)
                    optimizer.build(shards)
                ids = (tf.ragged.constant([[1, 39], [1, 1]]) if kind == "ragged"
                       else tf.constant(bags if kind == "dense_mask_zero" else [[1, 39, 2], [1, 1, 2]]))

                @tf.function
                def step():
                    def replica_step():
                        with tf.GradientTape() as tape:
                            loss = tf.reduce_sum(layer(ids))
                        gradients = tape.gradient(loss, shards)
                        optimizer.apply_gradients(zip(gradients, shards))

                    strategy.run(replica_step)

                coordinator.schedule(step)
                coordinator.join()
                results[f"{key}/shard_rows"] = np.array([s.shape[0] for s in shards])
                results[f"{key}/trained"] = np.concatenate([s.numpy() for s in shards])
            except Exception as error:
                results[f"{key}/error"] = np.array(f"{type(error).__name__}: {error}")
    np.savez(out_file, **results)


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    {"mirrored": run_mirrored, "parameter_server": run_parameter_server}[mode](out)
