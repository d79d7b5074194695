"""`keras_embed.DynamicEmbedding`: a row of its own for each key, with no
fixed vocabulary."""

import weakref

import keras
import numpy as np
import tensorflow as tf
from keras import constraints
from keras import initializers
from keras import regularizers

from keras_embed.layers import bag_reductions
from keras_embed.layers import dynamic_config
from keras_embed.layers import dynamic_reads
from keras_embed.layers import row_admission
from keras_embed.layers.errors import InvalidConfigError
from keras_embed.layers.errors import complete_error
from keras_embed.layers.ids import in_xla_context
from keras_embed.layers.key_map import CountMinSketch
from keras_embed.layers.key_map import KeyMap
from keras_embed.layers.key_map import buckets_of
from keras_embed.layers.key_map import fingerprints
from keras_embed.layers.table_reads import mark_layer_variables
from keras_embed.layers.table_reads import mark_updated_by_rows

@keras.saving.register_keras_serializable(package="keras_embed")
class DynamicEmbedding(keras.layers.Layer):
    """Looks keys up in a table that gives each key seen in training a row
    of its own, admitting new keys and evicting old ones as they come.

    e.g. user ids as they arrive: `[[90210], [2**40]] -> [[0.1, -0.2],
    [0.3, 0.05]]`, with no vocabulary fixed in advance.

    The table has `capacity` rows for keys, and after them the rows of keys
    that hold none (OOV). Which row a key gets:

    - a key holding a row gets that row, shared with no other key;
    - a key holding none (never admitted, evicted, freed by `ttl_steps`, or
      any key outside training that the map does not hold) gets, with
      `oov="learned"`, the one learned row `capacity`; with `oov="zeros"`,
      zeros (row `capacity`, kept zero); with `oov="buckets"`, row
      `capacity + farmhash64(key) mod num_oov_buckets`;
    - `mask_key` gets zeros, and is masked as `mask_zero` masks 0.

    Only training changes the map (`fit`, `train_on_batch`,
    `layer(keys, training=True)`): each training call counts its keys,
    admits those seen `min_count` times into unused rows, or rows taken
    from other keys (`eviction`: "lru" the least recently seen, "lfu" the
    least often seen; rows not seen for `ttl_steps` steps are freed first),
    gives each admitted key fresh values from `embeddings_initializer`, and
    has our optimizers reset that row's slots in the same step. `predict`,
    `evaluate` and serving only look up. The table's gradient is a
    `tf.IndexedSlices` of the rows looked up. The whole state (rows, map,
    counts, step clock, sketch, seed) is saved with the model.

    Example:

    >>> import numpy as np
    >>> from keras_embed import DynamicEmbedding
    >>> users = DynamicEmbedding(capacity=2, output_dim=3, seed=1)
    >>> keys = np.array([[90210, 2**40]])
    >>> _ = users(keys, training=True)     # admits both keys
    >>> users.lookup(np.array([2**40, 90210, 7])).tolist()
    [1, 0, -1]
    >>> _ = users(np.array([[7]]), training=True)  # full: 7 takes the LRU row
    >>> users.vocabulary()["key"].tolist()
    [7, 1099511627776]

    Args:
        capacity: Integer: the most keys holding a row at once (below 2**31
            with the OOV rows).
        output_dim: Integer: the size of each vector.
        key_dtype: `"int64"` (any integer keys: negative, above 2**31), or
            `"string"` (each string keyed by its farmhash64 fingerprint: two
            of `n` strings share a key with probability about `n**2 / 2**65`,
            3e-8 for 10**6 strings, 3e-4 for 10**8, 3e-2 for 10**9).
        combiner: `None` (one vector per key), or `"sum"`, `"mean"`,
            `"sqrtn"`, `"max"`: one vector per bag (the last axis), as
            `keras_embed.EmbeddingBag` combines them, with optional per-key
            weights; `mask_key` is left out of every bag.
        mask_key: Optional key that is padding: never admitted, zeros out,
            masked (with no combiner), left out of bags.
        oov: `"learned"`, `"zeros"` or `"buckets"`: what keys holding no row
            get (see above).
        num_oov_buckets: Integer: the OOV rows for `oov="buckets"`.
        min_count: Integer >= 1: a key gets a row once seen this many times
            in training, recently. With `min_count > 1`, keys holding no row
            are counted in a count-min sketch of `4 * sketch_width` int32
            counters, all halved each time `sketch_width` sightings were
            counted: a count is never under the key's recent count, and over
            it by more than 2e (5.4) with probability under 2%. A larger
            width remembers sightings longer.
        eviction: `"lru"` (the default) or `"lfu"`.
        ttl_steps: Optional integer >= 1: a row not seen for this many
            training steps is freed (its key holds no row).
        sketch_width: Integer: the sketch's width; defaults to
            `max(1024, capacity // 4)` (4 bytes a row).
        embeddings_initializer: Initializer of the table and of each row
            given to a key: a random uniform, normal, truncated normal or
            variance-scaling initializer (scaled to the whole table), or a
            constant one.
        embeddings_regularizer: Regularizer function applied to the table.
        embeddings_constraint: Constraint function applied to the table.
        seed: Optional integer: the seed of the rows given to keys.
        **kwargs: Base layer arguments: `name`, `dtype`, `trainable`.

    Call arguments:
        inputs: keys: a dense tensor of any rank, a `tf.RaggedTensor` or a
            `tf.SparseTensor` (with a combiner: `(batch, length)` ragged or
            sparse, one bag per row); integers, or strings.
        weights: per-key weights (with a combiner other than "max"), of
            the kind and shape of `inputs`.
        training: whether the call may change the map.

    Input shape:
        `(*)` keys; with a combiner `(*, length)`.

    Output shape:
        `(*, output_dim)` (ragged keys give a ragged output); with a
        combiner `(*, output_dim)`, one vector per bag.
    """

    def __init__(
        self,
        capacity,
        output_dim,
        key_dtype="int64",
        combiner=None,
        mask_key=None,
        oov="learned",
        num_oov_buckets=None,
        min_count=1,
        eviction="lru",
        ttl_steps=None,
        sketch_width=None,
        embeddings_initializer="uniform",
        embeddings_regularizer=None,
        embeddings_constraint=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        checks = dynamic_config.Checks(self.name)
        self.capacity = checks.size("capacity", capacity)
        self.output_dim = checks.size("output_dim", output_dim)
        self.key_dtype = checks.key_dtype(key_dtype)
        self.combiner = checks.combiner(combiner)
        self.mask_key = checks.mask_key(mask_key, self.key_dtype)
        self.oov, self.num_oov_buckets = checks.oov(oov, num_oov_buckets)
        self.min_count = checks.size("min_count", min_count)
        self.eviction = checks.eviction(eviction)
        self.ttl_steps = None if ttl_steps is None else checks.size("ttl_steps", ttl_steps)
        self.sketch_width = checks.optional_size("sketch_width", sketch_width)
        self.seed = checks.optional_size("seed", seed, minimum=0)
        checks.fits(self.capacity, self.num_oov_buckets)
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self._row_initializer = checks.row_initializer(self.embeddings_initializer)
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer)
        self.embeddings_constraint = constraints.get(embeddings_constraint)
        self._seed_generator = keras.random.SeedGenerator(self.seed)
        self.autocast = False
        self.supports_masking = self.combiner is None and self.mask_key is not None
        # The rows each training step's trace looked up so far, by graph.
        self._rows_by_graph = weakref.WeakKeyDictionary()

    @property
    def supports_jit(self):
        """False: hash tables do not compile, so Keras never picks XLA for
        a model with this layer (`jit_compile="auto"` or True)."""
        return False

    @supports_jit.setter
    def supports_jit(self, value):
        pass  # keras.layers.Layer sets True.

    def build(self, input_shape=None):
        if self.built:
            return
        dynamic_config.check_strategy(self.name)
        rows = self.capacity + self.num_oov_buckets
        self._embeddings = self.add_weight(
            shape=(rows, self.output_dim), initializer=self._table_initializer,
            name="embeddings", regularizer=self.embeddings_regularizer,
            constraint=self.embeddings_constraint, trainable=True,
        )

        def state(name, shape, dtype):
            return self.add_weight(shape=shape, initializer="zeros", dtype=dtype,
                                   name=name, trainable=False)

        self._row_keys = state("row_keys", (self.capacity,), "int64")
        self._counts = state("counts", (self.capacity,), "int32")
        self._last_seen = state("last_seen", (self.capacity,), "int32")
        self._rows_used = state("rows_used", (), "int32")
        self._step = state("step", (), "int64")
        self._figures = state("figures", (len(row_admission.FIGURES),), "float32")
        # Which state the key map was built from: a random number for each
        # layer, then + 1 for each training step. Variables assigned by any
        # other way (a Keras 2 `.h5` file, `set_weights`) bring another one,
        # and the next call rebuilds the map from them.
        stamp = int(np.random.default_rng().integers(1, 2**62))
        self._map_stamp = self.add_weight(
            shape=(), dtype="int64", name="map_stamp", trainable=False,
            initializer=keras.initializers.Constant(stamp),
        )
        self._sketch = None
        if self.min_count > 1:
            width = self.sketch_width or max(1024, self.capacity // 4)
            counters = state("sketch", (4, width), "int32")
            added = state("sketch_added", (), "int64")
            self._sketch = CountMinSketch(counters.value, added.value)
        with tf.init_scope():  # Built in a tf.function's trace, made eagerly.
            self._key_map = KeyMap(self.capacity)
            # Empty, as the new layer's state: in step with it, not rebuilt.
            self._key_map.stamp.assign(stamp)
            # The rows given to keys whose slots no optimizer reset yet.
            self._fresh = tf.Variable(tf.zeros([rows], tf.bool), trainable=False)
            self._lru_queue = row_admission.LruQueue()
        row_admission.mark_fresh_rows(self._embeddings, self._fresh)
        self._figure_metrics = [
            row_admission.StepFigure(self, index, name) for index, name in enumerate(row_admission.FIGURES)
        ]
        self.built = True
        mark_layer_variables(self)
        mark_updated_by_rows(self._embeddings)  # Rows are written every step.

    def _table_initializer(self, shape, dtype=None):
        values = self.embeddings_initializer(shape, dtype=dtype)
        if self.oov == "zeros":  # The zero row stays zero: no gradient reaches it.
            values = tf.concat([values[: self.capacity], tf.zeros_like(values[self.capacity:])], 0)
        return values

    def _fresh_values(self, count):
        return self._row_initializer(
            (count, self.output_dim), self._embeddings.shape[0], self._seed_generator,
            self._embeddings.dtype,
        )

    @property
    def embeddings(self):
        return self._embeddings

    def call(self, inputs, weights=None, training=None):
        if in_xla_context():
            raise complete_error(ValueError(
                f"DynamicEmbedding layer '{self.name}' cannot run under XLA: its "
                "hash table does not compile. Compile the model with "
                "jit_compile=False (Keras's \"auto\" never picks XLA for it)."
            ))
        keys, kind = self._keys(inputs)
        flat = dynamic_config.flat_values(keys)
        row_admission.sync_map(self)
        if weights is not None and self.combiner in (None, "max"):
            raise complete_error(ValueError(
                f"DynamicEmbedding layer '{self.name}': per-key weights need a "
                f"combiner 'sum', 'mean' or 'sqrtn'. Received: weights with "
                f"combiner={self.combiner!r}."
            ))
        padding = None if self.mask_key is None else tf.equal(flat, self._mask_key_value)
        if training:
            kept = None if padding is None else tf.where(tf.logical_not(padding))
            counted = flat if padding is None else tf.gather_nd(flat, kept)
            if self.combiner in ("sum", "mean", "sqrtn") and weights is None:
                # Bags summed from the distinct keys' rows (no copy per key).
                bag_of, bags, shape = dynamic_config.bags_of(keys, kind, self.name)
                if kept is not None:
                    bag_of = tf.gather_nd(bag_of, kept)
                totals = dynamic_reads.train_step_vectors(self, counted, (bag_of, bags))
                combined = bag_reductions.unweighted(self.combiner, totals, bag_of, bags)
                outputs = tf.reshape(combined, tf.concat([shape, [self.output_dim]], 0))
                return tf.cast(outputs, self.compute_dtype)
            vectors = dynamic_reads.train_step_vectors(self, counted)
            if padding is not None:
                shape = tf.stack([tf.size(flat, out_type=tf.int64), self.output_dim])
                vectors = tf.scatter_nd(kept, vectors, shape)
        else:
            vectors = self._vectors(flat, self._held_rows(flat), padding)
        outputs = dynamic_config.shaped(vectors, keys, kind, self.output_dim, self.combiner,
                                        weights, padding, self.name)
        return tf.cast(outputs, self.compute_dtype)

    def _keys(self, inputs):
        """The keys as int64 (string keys fingerprinted), and their kind."""
        return dynamic_config.keys_of(inputs, self.key_dtype, self.name)

    @property
    def _mask_key_value(self):
        if self.key_dtype == "string":
            return fingerprints(tf.constant([self.mask_key]))[0]
        return tf.constant(self.mask_key, tf.int64)

    def _held_rows(self, keys):
        rows = self._key_map.lookup(keys)
        holds = row_admission.held(self, keys, rows, self._step.value)
        return tf.where(holds, rows, -1)

    def _oov_rows(self, keys):
        """The row each of `keys` reads without one of its own: the learned
        OOV row, its bucket's, or -1 (zeros)."""
        if self.oov == "buckets":
            return self.capacity + tf.cast(buckets_of(keys, self.num_oov_buckets), tf.int32)
        return tf.fill(tf.shape(keys), self.capacity if self.oov == "learned" else -1)

    def _vectors(self, keys, rows, padding):
        """`(n, output_dim)` vectors of flat keys with their rows (-1: none)."""
        index = tf.where(rows < 0, self._oov_rows(keys), rows)
        table = self._embeddings.value  # Read by rows: a ResourceGather.
        zero = index < 0 if self.oov == "zeros" else None
        if padding is not None:
            zero = padding if zero is None else tf.logical_or(zero, padding)
        if zero is None:
            return tf.gather(table, index)
        # Zeros are not looked up: no row of the table is in their gradient,
        # so no optimizer touches a row (or its slots) for them.
        kept = tf.where(tf.logical_not(zero))
        vectors = tf.gather(table, tf.gather_nd(index, kept))
        shape = tf.stack([tf.size(index, out_type=tf.int64), self.output_dim])
        return tf.scatter_nd(kept, vectors, shape)

    def compute_mask(self, inputs, mask=None):
        if not self.supports_masking:
            return None
        keys, kind = self._keys(inputs)
        if kind == "sparse":
            keys = tf.sparse.to_dense(keys, default_value=self._mask_key_value)
        return tf.not_equal(keys, self._mask_key_value)

    def compute_output_shape(self, input_shape, weights_shape=None):
        if self.combiner is None:
            return (*tuple(input_shape), self.output_dim)
        return (*tuple(input_shape)[:-1], self.output_dim)

    def compute_output_spec(self, inputs, weights=None, training=None):
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype=self.compute_dtype)

    def lookup(self, keys):
        """The row of each key (indices into `embeddings`), -1 for none.

        Args:
            keys: keys of the layer's `key_dtype`, of any shape.

        Returns:
            A NumPy int32 array of the shape of `keys`.
        """
        keys = np.asarray(keys)
        flat, _ = self._keys(tf.reshape(tf.constant(keys), [-1]))
        self.build()
        row_admission.sync_map(self)
        return self._held_rows(flat).numpy().reshape(keys.shape)

    def vocabulary(self):
        """The keys holding rows, with their rows, counts and the step each
        was last seen in training, ordered by row.

        Returns:
            A dict of NumPy arrays: `"key"` (int64; a string key's
            fingerprint), `"row"`, `"count"`, `"last_seen"`.
        """
        self.build()
        row_admission.sync_map(self)
        used = int(self._rows_used.numpy())
        rows = np.arange(used, dtype=np.int32)
        keys = self._row_keys.numpy()[:used]
        holds = self._key_map.lookup(tf.constant(keys)).numpy() == rows
        holds &= row_admission.held(self, keys, tf.constant(rows), self._step.value).numpy()
        return {
            "key": keys[holds], "row": rows[holds],
            "count": self._counts.numpy()[:used][holds],
            "last_seen": self._last_seen.numpy()[:used][holds].astype(np.int64),
        }

    @property
    def metrics(self):
        """The last training step's figures, in `fit`'s logs: rows held,
        keys admitted, rows evicted, share of lookups that found no row."""
        return list(getattr(self, "_figure_metrics", []))

    def save_own_variables(self, store):
        """Saves the rows, the map's state and the seed generator's state."""
        super().save_own_variables(store)
        if self.built:
            store["seed_generator_state"] = self._seed_generator.state.numpy()
            store["key_is_string"] = np.array(self.key_dtype == "string")

    def load_own_variables(self, store):
        """Loads what `save_own_variables` saved, and rebuilds the map."""
        dynamic_config.check_saved_state(self, store)
        variables = self._trainable_variables + self._non_trainable_variables
        for index, variable in enumerate(variables):
            variable.assign(store[str(index)])
        self._seed_generator.state.assign(store["seed_generator_state"])
        self._rebuild_map()

    def _rebuild_map(self):
        row_admission.rebuild_map(self, self._step.value)
        self._fresh.assign(tf.zeros_like(self._fresh))

    def get_config(self):
        return {
            **super().get_config(),
            "capacity": self.capacity,
            "output_dim": self.output_dim,
            "key_dtype": self.key_dtype,
            "combiner": self.combiner,
            "mask_key": self.mask_key,
            "oov": self.oov,
            "num_oov_buckets": self.num_oov_buckets if self.oov == "buckets" else None,
            "min_count": self.min_count,
            "eviction": self.eviction,
            "ttl_steps": self.ttl_steps,
            "sketch_width": self.sketch_width,
            "embeddings_initializer": initializers.serialize(self.embeddings_initializer),
            "embeddings_regularizer": regularizers.serialize(self.embeddings_regularizer),
            "embeddings_constraint": constraints.serialize(self.embeddings_constraint),
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        try:
            return super().from_config(config)
        except TypeError as error:  # Keras's wrapping starts with the config.
            if isinstance(error.__context__, InvalidConfigError):
                raise error.__context__ from None
            raise

    def __repr__(self):
        return (f"<DynamicEmbedding name={self.name}, capacity={self.capacity}, "
                f"output_dim={self.output_dim}, key_dtype={self.key_dtype!r}, "
                f"eviction={self.eviction!r}>")
