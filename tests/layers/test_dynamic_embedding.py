"""`keras_embed.DynamicEmbedding`'s map against a NumPy model worked key by
key (tests/layers/dynamic_map_model.py), and its outputs against the rows
it holds."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_embed
from keras_embed import DynamicEmbedding
from keras_embed.layers import row_admission
from keras_embed.layers.key_map import DELETED_KEY
from keras_embed.layers.key_map import EMPTY_KEY

from dynamic_map_model import MapModel
from test_xla_default import pretend_gpu  # noqa: F401 (a fixture)

# Keys of every kind: negative, past 2**31, the two the hash table reserves.
KEYS = np.array([5, -3, 2**40, 2**62 + 7, EMPTY_KEY, DELETED_KEY, 0, 17, -(2**35), 99, 12, 13])


def stream(rng, steps, batch, keys=KEYS, zipf=1.3):
    """Batches of keys, some much more common than others."""
    ranks = (rng.zipf(zipf, size=(steps, batch)) - 1) % len(keys)
    return keys[ranks]


def assert_same_map(layer, model):
    ours, expected = layer.vocabulary(), model.vocabulary()
    for field in ("key", "row", "count", "last_seen"):
        np.testing.assert_array_equal(ours[field], expected[field], err_msg=field)
    np.testing.assert_array_equal(layer.lookup(KEYS), model.lookup(KEYS))


MAPS = [
    dict(capacity=4),
    dict(capacity=4, eviction="lfu"),
    dict(capacity=5, ttl_steps=2),
    dict(capacity=5, eviction="lfu", ttl_steps=3),
    dict(capacity=3, min_count=3, sketch_width=1 << 16),
    dict(capacity=2, eviction="lfu", min_count=2, ttl_steps=1, sketch_width=1 << 16),
    dict(capacity=1),
]


@pytest.mark.parametrize("settings", MAPS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_the_map_follows_the_model_key_by_key(settings, rng):
    layer = DynamicEmbedding(output_dim=2, seed=0, **settings)
    model = MapModel(**{k: v for k, v in settings.items() if k != "sketch_width"})
    for keys in stream(rng, steps=30, batch=6):
        rows = layer(keys[None, :], training=True)  # noqa: F841
        expected_rows = model.train(keys)
        assert_same_map(layer, model)
        np.testing.assert_array_equal(np.flatnonzero(layer._fresh.numpy()), sorted(model.fresh))
        np.testing.assert_array_equal(layer.lookup(keys), expected_rows)


def test_a_tf_function_training_loop_follows_the_model(rng):
    layer = DynamicEmbedding(3, 2, eviction="lfu", ttl_steps=4, seed=0)
    model = MapModel(3, eviction="lfu", ttl_steps=4)
    step = tf.function(lambda keys: layer(keys, training=True))
    for keys in stream(rng, steps=25, batch=5):
        step(tf.constant(keys[None, :]))
        model.train(keys)
        assert_same_map(layer, model)


def test_more_new_keys_than_rows_the_first_win():
    layer = DynamicEmbedding(2, 1, seed=0)
    layer(np.array([[1, 2, 3, 4]]), training=True)
    assert layer.vocabulary()["key"].tolist() == [1, 2]
    assert layer.lookup([3, 4]).tolist() == [-1, -1]
    # Rows this batch holds are never taken, even when new keys wait.
    layer(np.array([[2, 5, 6]]), training=True)
    assert layer.vocabulary()["key"].tolist() == [5, 2]


def test_lru_evicts_the_least_recently_seen_lfu_the_least_often():
    for eviction, survivor in (("lru", [10, 30]), ("lfu", [30, 20])):
        layer = DynamicEmbedding(2, 1, eviction=eviction, seed=0)
        layer(np.array([[10, 10, 10]]), training=True)  # 10: seen 3 times, step 1
        layer(np.array([[20]]), training=True)  # 20: once, step 2
        layer(np.array([[10]]), training=True)  # 10: 4 times, step 3 (20 is now LRU)
        layer(np.array([[30]]), training=True)
        # LRU takes 20's row (last seen at step 2); LFU takes... 20's too (1 < 4).
        keys = layer.vocabulary()["key"].tolist()
        assert sorted(keys) == sorted([10, 30]), (eviction, keys)
    del survivor


def test_ttl_frees_rows_not_seen_for_ttl_steps():
    layer = DynamicEmbedding(4, 1, ttl_steps=2, seed=0)
    layer(np.array([[1, 2]]), training=True)  # step 1
    layer(np.array([[1]]), training=True)  # step 2
    layer(np.array([[1]]), training=True)  # step 3: 2 last seen 2 steps ago: held
    assert layer.lookup([1, 2]).tolist() == [0, 1]
    layer(np.array([[1]]), training=True)  # step 4: 3 steps ago: freed
    assert layer.lookup([1, 2]).tolist() == [0, -1]
    assert layer.vocabulary()["key"].tolist() == [1]


def test_a_new_key_gets_fresh_values_never_the_old_keys():
    layer = DynamicEmbedding(1, 3, embeddings_initializer=keras.initializers.Constant(0.25), seed=0)
    layer(np.array([[7]]), training=True)
    layer.embeddings.assign(tf.fill(layer.embeddings.shape, 9.0))  # trained, say
    out = layer(np.array([[8]]), training=True)  # 8 takes 7's row
    np.testing.assert_array_equal(out.numpy(), np.full((1, 1, 3), 0.25, np.float32))
    np.testing.assert_array_equal(layer.embeddings.numpy()[0], [0.25] * 3)
    np.testing.assert_array_equal(layer.embeddings.numpy()[1], [9.0] * 3)  # the OOV row kept


def test_fresh_random_rows_come_from_the_seed_and_the_initializer():
    def fresh_rows(seed):
        layer = DynamicEmbedding(2, 4, seed=seed, embeddings_initializer="glorot_uniform")
        layer(np.array([[1, 2]]), training=True)
        return layer.embeddings.numpy()[:2]

    first, again, other = fresh_rows(3), fresh_rows(3), fresh_rows(4)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    limit = np.sqrt(6.0 / (3 + 4))  # Glorot's limit for the (3, 4) table
    assert np.all(np.abs(first) <= limit) and np.std(first) > limit / 10


def test_only_training_changes_the_state(rng):
    inputs = keras.Input((4,), dtype="int64")
    layer = DynamicEmbedding(3, 2, combiner="sum", seed=0)
    model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)))
    model.compile("sgd", "mse")
    keys = stream(rng, 2, 4)
    model.fit(keys, np.ones((2, 1)), verbose=0)
    before = [v.numpy().copy() for v in layer.weights]
    model.predict(stream(rng, 3, 4), verbose=0)
    model.evaluate(stream(rng, 3, 4), np.ones((3, 1)), verbose=0)
    layer(stream(rng, 3, 4))
    layer(stream(rng, 3, 4), training=False)
    for was, variable in zip(before, layer.weights):
        np.testing.assert_array_equal(variable.numpy(), was, err_msg=variable.name)


def test_the_gradient_is_the_looked_up_rows():
    layer = DynamicEmbedding(2, 2, seed=0)
    layer(np.array([[1, 2]]), training=True)
    layer(np.array([[1]]), training=True)  # 2 is now the least recently seen
    keys = np.array([[3, 1, 3]])  # 3 takes 2's row (1), admitted in this step
    with tf.GradientTape() as tape:
        out = layer(keys, training=True)
        loss = tf.reduce_sum(out * tf.constant([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]]))
    gradient = tape.gradient(loss, layer.embeddings)
    assert isinstance(gradient, tf.IndexedSlices)
    # One slice per lookup, to the rows the keys hold after the step.
    assert gradient.indices.numpy().tolist() == [1, 0, 1]
    np.testing.assert_array_equal(gradient.values.numpy(), [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    # Key 3 read the values its row was given.
    table = layer.embeddings.numpy()
    np.testing.assert_array_equal(out.numpy()[0], table[[1, 0, 1]])


def test_keys_without_a_row_get_no_gradient_with_zeros_for_oov():
    layer = DynamicEmbedding(1, 2, oov="zeros", seed=0)
    layer(np.array([[1]]), training=True)
    with tf.GradientTape() as tape:
        # 5 takes 1's row, 6 finds none: every row is this step's.
        out = layer(np.array([[5, 6]]), training=True)
        loss = tf.reduce_sum(out)
    gradient = tape.gradient(loss, layer.embeddings)
    assert gradient.indices.numpy().tolist() == [0]
    np.testing.assert_array_equal(out.numpy()[0, 1], [0.0, 0.0])
    np.testing.assert_array_equal(out.numpy()[0, 0], layer.embeddings.numpy()[0])


def test_keys_without_a_row_get_the_oov_rows():
    learned = DynamicEmbedding(2, 2, seed=0)
    learned(np.array([[1]]), training=True)
    out = learned(np.array([[1, 50, 60]])).numpy()[0]
    table = learned.embeddings.numpy()
    np.testing.assert_array_equal(out, table[[0, 2, 2]])

    zeros = DynamicEmbedding(2, 2, oov="zeros", seed=0)
    out = zeros(np.array([[50]]), training=False).numpy()
    np.testing.assert_array_equal(out, np.zeros((1, 1, 2), np.float32))

    buckets = DynamicEmbedding(2, 2, oov="buckets", num_oov_buckets=5, seed=0)
    keys = np.array([50, 60, -70, 2**50])
    out = buckets(keys).numpy()
    fingerprint = tf.bitcast(tf.fingerprint(tf.constant(keys)), tf.uint64).numpy()
    rows = 2 + (fingerprint & np.uint64(2**63 - 1)) % 5
    np.testing.assert_array_equal(out, buckets.embeddings.numpy()[rows.astype(int)])


def test_mask_key_is_padding():
    layer = DynamicEmbedding(4, 2, mask_key=-1, seed=0)
    keys = np.array([[5, -1, 6, -1]])
    out = layer(keys, training=True)
    assert layer.vocabulary()["key"].tolist() == [5, 6]
    np.testing.assert_array_equal(out.numpy()[0, [1, 3]], np.zeros((2, 2), np.float32))
    mask = layer.compute_mask(keys)
    assert mask.numpy().tolist() == [[True, False, True, False]]
    assert out._keras_mask.numpy().tolist() == [[True, False, True, False]]


def test_string_keys_are_their_fingerprints():
    words = DynamicEmbedding(4, 2, key_dtype="string", mask_key="", seed=0)
    out = words(np.array([["cat", "dog", ""]]), training=True)
    fingerprints = tf.bitcast(tf.fingerprint(tf.constant(["cat", "dog"])), tf.int64).numpy()
    assert words.vocabulary()["key"].tolist() == fingerprints.tolist()
    assert words.lookup(np.array(["dog", "cat", "eel"])).tolist() == [1, 0, -1]
    np.testing.assert_array_equal(out.numpy()[0, :2], words.embeddings.numpy()[:2])


@pytest.mark.parametrize("kind", ["dense3", "ragged", "sparse"])
def test_keys_of_any_kind_and_rank(kind):
    layer = DynamicEmbedding(10, 2, seed=0)
    values = [[4, 9], [7]]
    if kind == "dense3":
        keys = tf.constant([[[4, 9], [7, 4]]], tf.int32)
        out = layer(keys, training=True)
        assert out.shape == (1, 2, 2, 2)
        rows = layer.lookup(keys.numpy())
    elif kind == "ragged":
        keys = tf.ragged.constant(values, dtype=tf.int64)
        out = layer(keys, training=True)
        assert isinstance(out, tf.RaggedTensor) and out.shape.as_list() == [2, None, 2]
        out, rows = out.flat_values, layer.lookup(keys.flat_values.numpy())
    else:
        keys = tf.SparseTensor([[0, 0], [0, 2], [1, 1]], tf.constant([4, 9, 7], tf.int64), [2, 3])
        out = layer(keys, training=True)
        assert out.shape == (2, 3, 2)
        np.testing.assert_array_equal(out.numpy()[0, 1], [0, 0])  # missing: zeros
        out, rows = tf.gather_nd(out, keys.indices), layer.lookup(np.array([4, 9, 7]))
    np.testing.assert_array_equal(
        np.reshape(out.numpy(), (-1, 2)), layer.embeddings.numpy()[np.reshape(rows, -1)]
    )


@pytest.mark.parametrize("weighted", [True, False], ids=["weighted", "unweighted"])
@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn", "max"])
@pytest.mark.parametrize("kind", ["dense", "ragged", "sparse"])
def test_bags_are_embedding_bags_of_the_rows(combiner, kind, weighted):
    layer = DynamicEmbedding(20, 3, combiner=combiner, mask_key=0, seed=0)
    bag_values = [[11, 12, 11], [13], [14, 15]]
    weight_values = [[0.5, 2.0, 1.0], [3.0], [1.0, 0.25]]
    if kind == "dense":
        keys = tf.constant([[11, 12, 11], [13, 0, 0], [14, 15, 0]], tf.int64)
        weights = tf.constant([[0.5, 2.0, 1.0], [3.0, 9.0, 9.0], [1.0, 0.25, 9.0]])
    elif kind == "ragged":
        keys = tf.ragged.constant(bag_values, dtype=tf.int64)
        weights = tf.ragged.constant(weight_values)
    else:
        indices = [[b, i] for b, row in enumerate(bag_values) for i in range(len(row))]
        keys = tf.SparseTensor(indices, tf.constant(sum(bag_values, []), tf.int64), [3, 3])
        weights = tf.SparseTensor(indices, tf.constant(sum(weight_values, [])), [3, 3])
    if combiner == "max" or not weighted:
        weights = None
    scale = tf.constant([[1.0, -2.0, 0.5], [3.0, 0.25, -1.0], [2.0, 1.5, 4.0]])
    with tf.GradientTape() as tape:
        out = layer(keys, weights, training=True)
        loss = tf.reduce_sum(out * scale)
    gradient = tf.convert_to_tensor(tape.gradient(loss, layer.embeddings))
    rows = layer.lookup(np.array(sum(bag_values, [])))
    rows = np.split(rows, np.cumsum([len(b) for b in bag_values])[:-1])
    bag = keras_embed.EmbeddingBag(22, 3, combiner=combiner, mask_zero=True)
    bag.build()
    bag.embeddings.assign(np.concatenate([np.zeros((1, 3), np.float32), layer.embeddings.numpy()]))
    ids = tf.ragged.constant([list(r + 1) for r in rows], dtype=tf.int64)
    bag_weights = None if weights is None else tf.ragged.constant(weight_values)
    with tf.GradientTape() as tape:
        expected = bag(ids, bag_weights)
        loss = tf.reduce_sum(expected * scale)
    expected_gradient = tf.convert_to_tensor(tape.gradient(loss, bag.embeddings))
    np.testing.assert_array_equal(out.numpy(), expected.numpy())
    np.testing.assert_array_equal(gradient.numpy(), expected_gradient.numpy()[1:])


def test_fit_logs_the_step_figures(rng):
    inputs = keras.Input((5,), dtype="int64")
    layer = DynamicEmbedding(6, 2, combiner="mean", seed=0, name="users")
    model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)))
    model.compile(keras_embed.optimizers.LazyAdam(), "mse")
    keys = np.arange(40).reshape(8, 5)  # 5 new keys a batch
    history = model.fit(keys, np.ones((8, 1)), batch_size=2, epochs=1, verbose=0)
    # The last batch: keys 30..39, 10 new for 6 rows all held by the batch
    # before: 6 admitted, 6 evicted, 4 of 10 lookups found no row.
    assert history.history["users_rows_held"] == [6.0]
    assert history.history["users_admitted"] == [6.0]
    assert history.history["users_evicted"] == [6.0]
    np.testing.assert_allclose(history.history["users_missed_share"], [0.4])


def test_keras_never_picks_xla_for_it(pretend_gpu):
    def compiled(jit_compile):
        model = keras.Sequential([keras.Input((2,), dtype="int64"), DynamicEmbedding(4, 2)])
        model.compile("sgd", "mse", jit_compile=jit_compile)
        return model.jit_compile

    assert compiled("auto") is False
    with pytest.warns(UserWarning, match="Proceeding with `jit_compile=False`"):
        assert compiled(True) is False


def test_under_xla_the_layer_refuses_in_one_line():
    layer = DynamicEmbedding(4, 2, name="users")
    compiled = tf.function(lambda keys: layer(keys), jit_compile=True)
    with pytest.raises(ValueError) as caught:
        compiled(tf.constant([[1, 2]], tf.int64))
    assert str(caught.value) == (
        "DynamicEmbedding layer 'users' cannot run under XLA: its hash table does not "
        "compile. Compile the model with jit_compile=False (Keras's \"auto\" never picks "
        "XLA for it)."
    )


def test_repr_and_config():
    layer = DynamicEmbedding(100, 8, key_dtype="string", eviction="lfu", name="items")
    assert repr(layer) == (
        "<DynamicEmbedding name=items, capacity=100, output_dim=8, key_dtype='string', eviction='lfu'>"
    )
    config = layer.get_config()
    again = DynamicEmbedding.from_config(config)
    assert again.get_config() == config


def test_tensorboard_gets_the_step_figures(tmp_path):
    inputs = keras.Input((3,), dtype="int64")
    model = keras.Model(inputs, DynamicEmbedding(4, 2, combiner="sum", seed=0, name="users")(inputs))
    model.compile("sgd", "mse")
    board = keras.callbacks.TensorBoard(str(tmp_path))
    model.fit(np.array([[1, 2, 3], [4, 5, 6]]), np.ones((2, 2)), batch_size=1, callbacks=[board], verbose=0)
    values = {}
    for folder, _, files in tf.io.gfile.walk(str(tmp_path / "train")):
        for name in files:
            for event in tf.compat.v1.train.summary_iterator(f"{folder}/{name}"):
                for value in event.summary.value:
                    if value.tag.startswith("epoch_"):
                        values[value.tag] = float(tf.make_ndarray(value.tensor))
    # The last step: keys 4, 5, 6 for 4 rows holding 1, 2, 3 (one unused).
    assert values["epoch_users_rows_held"] == 4.0
    assert values["epoch_users_admitted"] == 3.0
    assert values["epoch_users_evicted"] == 2.0


def test_mixed_precision_trains_and_keeps_the_table_in_float32(policy):
    policy("mixed_float16")
    inputs = keras.Input((3,), dtype="int64")
    layer = DynamicEmbedding(4, 2, combiner="mean", seed=0, name="users")
    model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)))
    model.compile(keras_embed.optimizers.LazyAdam(0.1), "mse")
    model.fit(np.array([[1, 2, 3], [3, 4, 5]]), np.ones((2, 1)), batch_size=1, shuffle=False, verbose=0)
    assert layer.embeddings.dtype == "float32"
    assert layer(np.array([[1, 2, 3]])).dtype == "float16"
    # Step 2: 4 takes the unused row 3, 5 the least recently seen row 0.
    assert layer.vocabulary()["key"].tolist() == [5, 2, 3, 4]
    assert np.all(np.isfinite(layer.embeddings.numpy()))


@pytest.mark.parametrize("oov", ["learned", "zeros"])
def test_padding_and_zero_oov_keys_touch_no_row(oov):
    layer = DynamicEmbedding(2, 2, oov=oov, mask_key=0, seed=0)
    with tf.GradientTape() as tape:
        out = layer(np.array([[5, 0, 0]]), training=True)
        loss = tf.reduce_sum(out) + tf.reduce_sum(layer(np.array([[9, 8]])))  # no rows
    gradient = tape.gradient(loss, layer.embeddings)
    looked_up = sorted(gradient.indices.numpy().tolist())
    # Key 5's row 0; padding never; 9 and 8 the learned OOV row 2, or nothing.
    assert looked_up == ([0] if oov == "zeros" else [0, 2, 2])


def test_min_count_keeps_filtering_one_off_keys_as_the_stream_goes_on():
    layer = DynamicEmbedding(100_000, 1, min_count=2, sketch_width=1024, seed=0)
    rng = np.random.default_rng(0)
    admitted_share = []
    for window in range(8):  # 8 windows of 1280 keys never seen before
        keys = rng.integers(0, 2**62, size=(10, 128))
        before = len(layer.vocabulary()["key"])
        for batch in keys:
            layer(batch[None, :], training=True)
        admitted_share.append((len(layer.vocabulary()["key"]) - before) / keys.size)
    # A one-off key is admitted only where its counters collide with others'
    # enough; the share stays low instead of growing to every key.
    assert max(admitted_share) < 0.1, admitted_share
    # And a key seen twice among recent sightings is admitted.
    layer(np.array([[7, 7]]), training=True)
    assert layer.lookup([7]).tolist() != [-1]


def test_the_sketch_halves_its_counters_every_width_sightings():
    layer = DynamicEmbedding(10, 1, min_count=5, sketch_width=8, seed=0)
    layer(np.array([[3, 3, 3]]), training=True)  # 3 sightings: 3 counted
    layer(np.array([[4, 4, 4, 4, 4, 4]]), training=True)  # 9 >= 8: halved after
    layer(np.array([[3, 3]]), training=True)  # 3 // 2 + 2 = 3 < 5: no row
    assert layer.lookup([3, 4]).tolist() == [-1, 0]


@pytest.mark.parametrize("settings", MAPS[:4], ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_the_map_follows_the_model_when_priorities_share_counts(settings, rng, monkeypatch):
    monkeypatch.setattr(row_admission, "PRIORITY_BUCKETS", 2)
    test_the_map_follows_the_model_key_by_key(settings, rng)


@pytest.mark.parametrize("ttl_steps", [None, 6])
def test_a_long_lru_stream_follows_the_model(ttl_steps, rng):
    """Many evictions a step, long enough that the LRU queue is taken from
    and filled again many times."""
    keys = rng.integers(-(2**40), 2**40, size=300)
    layer = DynamicEmbedding(40, 1, ttl_steps=ttl_steps, seed=0)
    model = MapModel(40, ttl_steps=ttl_steps)
    step = tf.function(lambda batch: layer(batch, training=True))
    for batch in stream(rng, steps=80, batch=12, keys=keys, zipf=1.1):
        step(tf.constant(batch[None, :]))
        model.train(batch)
        for field in ("key", "row", "count", "last_seen"):
            np.testing.assert_array_equal(layer.vocabulary()[field], model.vocabulary()[field])


def test_a_new_layer_starts_with_its_map_in_step():
    # The empty map is the new layer's state: no rebuild at the first call,
    # whose import of empty buckets would allocate the map twice over.
    layer = DynamicEmbedding(8, 2, seed=0)
    layer(np.array([[1, 2]]), training=True)
    layer(np.array([[3]]))
    assert int(layer._key_map.cleared.numpy()) == 0
    assert layer.lookup([1, 2, 3]).tolist() == [0, 1, -1]
    # Another layer given these weights still rebuilds its map from them.
    other = DynamicEmbedding(8, 2, seed=0)
    other.build()
    other.set_weights(layer.get_weights())
    assert other.lookup([1, 2, 3]).tolist() == [0, 1, -1]
