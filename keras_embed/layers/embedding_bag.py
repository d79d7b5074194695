"""`keras_embed.EmbeddingBag`: one vector per bag of ids."""

import keras
import tensorflow as tf
from keras import constraints
from keras import initializers
from keras import regularizers

from keras_embed.layers import config_checks
from keras_embed.layers.bag_reductions import along_last_axis
from keras_embed.layers.bag_reductions import by_segments
from keras_embed.layers.embedding import Embedding
from keras_embed.layers.errors import layer_from_config
from keras_embed.layers.errors import complete_error
from keras_embed.layers.ids import checked as checked_ids
from keras_embed.layers.ids import in_xla_context
from keras_embed.layers.ids import nan_rows_for_bad_ids
from keras_embed.layers.lora import LoraMixin
from keras_embed.layers.quantization import QuantizationMixin


@keras.saving.register_keras_serializable(package="keras_embed")
class EmbeddingBag(LoraMixin, QuantizationMixin, keras.layers.Layer):
    """Looks up a bag of ids and combines their vectors into one.

    e.g. the genres of a film, `[2, 7]` -> `mean(table[2], table[7])`.

    The same numbers as `Embedding` followed by a masked reduction over the
    last axis (`GlobalAveragePooling1D` for `"mean"`), without that pooling
    layer, and with padding and empty bags handled: an empty bag gives a
    zero vector. The table's gradient is a `tf.IndexedSlices` of the rows
    the bags looked up, so `keras_embed.optimizers.LazyAdam` trains it at
    the cost of the batch. The table, its variables and saved layout are
    `keras_embed.Embedding`'s, as are the errors for bad ids.

    Example:

    >>> import numpy as np
    >>> from keras_embed import EmbeddingBag
    >>> bags = EmbeddingBag(10, 2, mask_zero=True,
    ...                     embeddings_initializer="ones")
    >>> bags(np.array([[3, 4, 0], [0, 0, 0]]))   # one bag per row; 0 pads
    <tf.Tensor: shape=(2, 2), dtype=float32, numpy=
    array([[1., 1.],
           [0., 0.]], dtype=float32)>
    >>> sums = EmbeddingBag(10, 2, combiner="sum",
    ...                     embeddings_initializer="ones")
    >>> sums(np.array([[3, 4]]), np.array([[0.5, 2.0]]))  # per-id weights
    <tf.Tensor: shape=(1, 2), dtype=float32, numpy=array([[2.5, 2.5]], dtype=float32)>

    Args:
        input_dim: Integer. Size of the vocabulary, i.e. maximum integer
            index + 1.
        output_dim: Integer. Dimension of the dense embedding.
        combiner: how a bag's vectors `v` with weights `w` (1 without
            weights) become one: `"sum"`: `sum(w * v)`; `"mean"` (the
            default): `sum(w * v) / sum(w)`; `"sqrtn"`:
            `sum(w * v) / sqrt(sum(w ** 2))`; `"max"`: the largest value of
            each column (no weights). An empty bag gives zeros; a bag whose
            weights sum to 0 divides by 0, as the formula says.
        embeddings_initializer: Initializer for the `embeddings` matrix (see
            `keras.initializers`).
        embeddings_regularizer: Regularizer function applied to the
            `embeddings` matrix (see `keras.regularizers`).
        embeddings_constraint: Constraint function applied to the
            `embeddings` matrix (see `keras.constraints`).
        mask_zero: Boolean: whether id 0 is padding, left out of every bag
            (`input_dim` should then equal the size of the vocabulary + 1).
        weights: Optional floating-point matrix of shape
            `(input_dim, output_dim)`: the initial embeddings.
        lora_rank: Optional positive integer: the rank of a LoRA delta over
            a frozen table, enabled when the layer is built (see
            `enable_lora`). `None` or 0: no LoRA.
        lora_alpha: Optional positive number: the LoRA delta is scaled by
            `lora_alpha / lora_rank`. Defaults to `lora_rank`.
        quantization_config: Optional `keras.quantizers.QuantizationConfig`
            for a quantized dtype policy (see `quantize`).
        **kwargs: Base layer arguments: `name`, `dtype`, `trainable`,
            `activity_regularizer`.

    Call arguments:
        inputs: the bags of ids: a dense tensor `(*, length)`, one bag per
            row of the last axis (`mask_zero=True` leaves out its zeros); a
            `tf.RaggedTensor` `(batch, None)`, one bag per row; or a
            `tf.SparseTensor` `(batch, length)`, whose stored entries in a
            row are its bag (missing entries are not in it). Integer ids in
            `[0, input_dim)`, or floats holding whole numbers.
        weights: optional per-id weights of the kind and shape of `inputs`
            (a ragged tensor with the same row lengths, a sparse tensor with
            the same indices), for `"sum"`, `"mean"` and `"sqrtn"`.

    Input shape:
        `(*, length)`, or `(batch, None)` ragged, or `(batch, length)`
        sparse.

    Output shape:
        `(*, output_dim)` (`(batch, output_dim)` for ragged and sparse
        ids), dense, in the policy's compute dtype.
    """

    # The table, as `keras_embed.Embedding` builds, reads, saves and loads
    # it: one implementation for both layers. (These functions use no
    # `super()`, so they work in a class that is not Embedding's subclass;
    # EmbeddingBag is not one, so that code looking for `Embedding` layers,
    # such as `swap` and the Sequential input rules, leaves it alone.)
    build = Embedding.build
    embeddings = Embedding.embeddings
    supports_jit = Embedding.supports_jit  # No XLA under jit_compile="auto".
    _regularizes_rows = Embedding._regularizes_rows
    _table_rows = Embedding._table_rows
    _set_initial_weights = Embedding._set_initial_weights
    save_own_variables = Embedding.save_own_variables
    load_own_variables = Embedding.load_own_variables

    def _look_up(self, ids):
        """Embedding's lookup of dense `ids`; with a `LookedUpRowsRegularizer`,
        also its penalty on the distinct rows looked up, padding left out
        (under XLA the bags look padding up and mask it after)."""
        if self._regularizes_rows():
            self.add_loss(self.embeddings_regularizer.rows_penalty(
                self._table_rows, ids, padding=0 if self.mask_zero else None))
        return Embedding._look_up(self, ids)

    def __init__(
        self,
        input_dim,
        output_dim,
        combiner="mean",
        embeddings_initializer="uniform",
        embeddings_regularizer=None,
        embeddings_constraint=None,
        mask_zero=False,
        weights=None,
        lora_rank=None,
        lora_alpha=None,
        quantization_config=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # Checked before anything is built: a config may come from a file.
        config_checks.check_size(self.name, "input_dim", input_dim)
        config_checks.check_size(self.name, "output_dim", output_dim)
        self.combiner = config_checks.check_combiner(self.name, combiner)
        lora_rank = config_checks.check_lora_rank(self.name, lora_rank)
        lora_alpha = config_checks.check_lora_alpha(self.name, lora_alpha)
        config_checks.check_table_fits(
            self.name, input_dim, output_dim, self.dtype_policy, lora_rank
        )
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer)
        self.embeddings_constraint = constraints.get(embeddings_constraint)
        self.mask_zero = config_checks.check_mask_zero(self.name, mask_zero)
        self.autocast = False
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha if lora_alpha is not None else lora_rank
        self.quantization_config = quantization_config
        if weights is not None:
            self._set_initial_weights(weights)

    def call(self, inputs, weights=None):
        if self.combiner == "max" and weights is not None:
            raise complete_error(ValueError(
                f"EmbeddingBag layer '{self.name}': combiner='max' takes no "
                "per-id weights (a weighted maximum has no agreed meaning). "
                "Use combiner 'sum', 'mean' or 'sqrtn' with weights, or "
                "call the layer without them."
            ))
        xla = in_xla_context()
        ids = checked_ids(inputs, self.input_dim, self.name, xla)
        if isinstance(ids, (tf.RaggedTensor, tf.SparseTensor)):
            outputs = self._combine_listed(ids, inputs, weights, xla)
        elif ids.shape.rank == 0:
            raise complete_error(ValueError(
                f"EmbeddingBag layer '{self.name}' received a single id "
                f"(shape ()); a bag is the last axis of the ids, e.g. shape "
                "(batch, length)."
            ))
        elif self.mask_zero and not xla:
            outputs = self._combine_compacted(ids, weights)
        else:
            outputs = self._combine_dense(ids, inputs, weights, xla)
        return tf.cast(outputs, self.compute_dtype)

    def _combine_compacted(self, ids, weights):
        """Dense bags with `mask_zero`: only the ids that are not padding are
        looked up, listed bag after bag, and summed by a sorted segment sum.

        The fastest way measured once bags hold padding (README.md, "Bags of
        ids"): it reads and writes no rows for padding, and holds one
        `(ids, output_dim)` tensor where multiplying by the mask holds two.
        XLA cannot compile ops of a data-dependent size, so `_combine_dense`
        serves it.
        """
        shape = tf.shape(ids, out_type=tf.int64)
        flat = tf.reshape(ids, [-1])

        def not_padding():
            kept = tf.where(tf.not_equal(flat, 0))[:, 0]
            return kept, tf.gather(flat, kept)

        def whole():  # No padding in the batch: no need to look for it.
            return tf.range(tf.size(flat, out_type=tf.int64)), flat

        # Where the ids to look up sit in `flat`, in order, and those ids.
        # Only integers go through the `tf.cond`: a cond that carries the
        # rows or the bags makes TensorFlow's type inference of the
        # gradient fail ("Type inference failed ...").
        kept, looked_up = tf.cond(tf.reduce_any(tf.equal(flat, 0)), not_padding, whole)
        rows = self._look_up(looked_up)
        if weights is not None:
            weights = self._dense_weights(weights, ids, rows.dtype)
            weights = tf.gather(tf.reshape(weights, [-1]), kept)
        outputs = by_segments(self.combiner, rows, kept // shape[-1],
                              tf.reduce_prod(shape[:-1]), weights, None, True, False)
        outputs = tf.reshape(outputs, tf.concat([shape[:-1], [self.output_dim]], 0))
        outputs.set_shape(ids.shape[:-1].concatenate([self.output_dim]))
        return outputs

    def _combine_dense(self, ids, given, weights, xla):
        """Bags along the last axis of dense ids: `(*, L)` -> `(*, D)`."""
        rows = self._look_up(ids)
        # Under XLA no check can raise: bad ids get NaN rows, NaN bags.
        rows = nan_rows_for_bad_ids(rows, given, self.input_dim, xla)
        if weights is not None:
            weights = self._dense_weights(weights, ids, rows.dtype)
        return along_last_axis(self.combiner, rows, ids, weights, self.mask_zero, xla)

    def _combine_listed(self, ids, given, weights, xla):
        """Bags given as rows of a ragged or sparse tensor: `(B, D)`."""
        if ids.shape.rank != 2:
            kind = type(ids).__name__
            raise complete_error(ValueError(
                f"EmbeddingBag layer '{self.name}' takes a {kind} of shape "
                f"(batch, length), one bag per row. Received: shape "
                f"{ids.shape}."
            ))
        if isinstance(ids, tf.RaggedTensor):
            flat, flat_given = ids.flat_values, given.flat_values
            bag_of = ids.value_rowids()
            bags = ids.nrows()
        else:
            flat, flat_given = ids.values, given.values
            bag_of = ids.indices[:, 0]
            bags = ids.dense_shape[0]
        if isinstance(ids, tf.RaggedTensor):
            ordered = True
        else:  # Sparse tensors are usually, not always, in row-major order.
            ordered = tf.reduce_all(bag_of[1:] >= bag_of[:-1])
        if weights is not None:
            weights = self._listed_weights(weights, ids)
        present = None
        if self.mask_zero and not xla:  # Padding left out before the lookup.
            kept = tf.not_equal(flat, 0)
            flat, bag_of = tf.boolean_mask(flat, kept), tf.boolean_mask(bag_of, kept)
            if weights is not None:
                weights = tf.boolean_mask(weights, kept)
        elif self.mask_zero:
            present = tf.not_equal(flat, 0)
        rows = self._look_up(flat)  # (n, D), the gradient's rows.
        rows = nan_rows_for_bad_ids(rows, flat_given, self.input_dim, xla)
        if weights is not None:
            weights = _as_weights(weights, rows.dtype, self.name)
        return by_segments(self.combiner, rows, bag_of, bags, weights, present, ordered, xla)

    def _dense_weights(self, weights, ids, dtype):
        if isinstance(weights, (tf.RaggedTensor, tf.SparseTensor)):
            raise self._weights_kind_error(weights, ids)
        weights = _as_weights(weights, dtype, self.name)
        if weights.shape.is_fully_defined() and ids.shape.is_fully_defined():
            if weights.shape != ids.shape:
                raise self._weights_shape_error(weights.shape, ids.shape)
            return weights
        check = tf.debugging.assert_equal(
            tf.shape(weights, out_type=tf.int64), tf.shape(ids, out_type=tf.int64),
            message=self._weights_shape_message("the ids'"),
        )
        with tf.control_dependencies([check]):
            return tf.identity(weights)

    def _listed_weights(self, weights, ids):
        """The flat weights of ragged or sparse `weights`, one per id."""
        if type(weights) is not type(ids):
            raise self._weights_kind_error(weights, ids)
        if isinstance(ids, tf.RaggedTensor):
            if weights.ragged_rank != 1 or weights.flat_values.shape.rank != 1:
                raise self._weights_shape_error(weights.shape, ids.shape)
            same, values = (weights.row_splits, ids.row_splits), weights.flat_values
            what = "row lengths"
        else:
            same, values = (weights.indices, ids.indices), weights.values
            what = "indices"
        if same[0].shape.is_fully_defined() and same[1].shape.is_fully_defined() \
                and same[0].shape != same[1].shape:
            raise self._weights_shape_error(weights.shape, ids.shape)
        check = tf.debugging.assert_equal(
            tf.cast(same[0], tf.int64), tf.cast(same[1], tf.int64),
            message=self._weights_shape_message(f"the ids' {what}"),
        )
        with tf.control_dependencies([check]):
            return tf.identity(values)

    def _weights_kind_error(self, weights, ids):
        return complete_error(TypeError(
            f"EmbeddingBag layer '{self.name}': per-id weights must be of the "
            f"ids' kind ({type(ids).__name__}). Received: weights of type "
            f"{type(weights).__name__}."
        ))

    def _weights_shape_message(self, what):
        return (
            f"EmbeddingBag layer '{self.name}': per-id weights must have "
            f"{what} shape, one weight per id."
        )

    def _weights_shape_error(self, got, expected):
        return complete_error(ValueError(
            self._weights_shape_message("the ids'")
            + f" Received: weights of shape {got} for ids of shape {expected}."
        ))

    def _int8_call(self, *args, training=None, **kwargs):
        return self.call(*args, **kwargs)

    def _int4_call(self, *args, training=None, **kwargs):
        return self.call(*args, **kwargs)

    def compute_mask(self, inputs, mask=None):
        return None  # The bag axis is reduced away, and its mask with it.

    def compute_output_shape(self, input_shape, weights_shape=None):
        return (*tuple(input_shape)[:-1], self.output_dim)

    def compute_output_spec(self, inputs, weights=None):
        return keras.KerasTensor(
            self.compute_output_shape(inputs.shape), dtype=self.compute_dtype
        )

    def get_config(self):
        config = {
            **super().get_config(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "combiner": self.combiner,
            "embeddings_initializer": initializers.serialize(
                self.embeddings_initializer
            ),
            "embeddings_regularizer": regularizers.serialize(
                self.embeddings_regularizer
            ),
            "activity_regularizer": regularizers.serialize(
                self.activity_regularizer
            ),
            "embeddings_constraint": constraints.serialize(
                self.embeddings_constraint
            ),
            "mask_zero": self.mask_zero,
            "quantization_config": keras.saving.serialize_keras_object(
                self.quantization_config
            ),
        }
        if self.lora_rank:
            config["lora_rank"] = self.lora_rank
            config["lora_alpha"] = self.lora_alpha
        return config

    @classmethod
    def from_config(cls, config):
        return layer_from_config(super().from_config, config)

    def __repr__(self):
        settings = f"{self.input_dim}, {self.output_dim}, combiner={self.combiner!r}"
        if self.mask_zero:
            settings += ", mask_zero=True"
        return f"<EmbeddingBag name={self.name}, {settings}>"


def _as_weights(weights, dtype, layer_name):
    weights = tf.convert_to_tensor(weights)
    if not (weights.dtype.is_floating or weights.dtype.is_integer):
        raise complete_error(TypeError(
            f"EmbeddingBag layer '{layer_name}': per-id weights must be "
            f"numbers. Received: weights of dtype {weights.dtype.name}."
        ))
    return tf.cast(weights, dtype)
