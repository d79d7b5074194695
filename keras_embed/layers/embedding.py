"""`keras_embed.Embedding`: a drop-in `keras.layers.Embedding`."""

import keras
import tensorflow as tf
from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers

from keras_embed.layers import config_checks
from keras_embed.layers import jit_default
from keras_embed.layers.backend_check import check_backend
from keras_embed.layers import input_length as input_length_rules
from keras_embed.layers.ids import checked as checked_ids
from keras_embed.layers.ids import in_xla_context
from keras_embed.layers.ids import nan_rows_for_bad_ids
from keras_embed.layers.errors import layer_from_config
from keras_embed.layers.lora import LoraMixin
from keras_embed.layers.looked_up_rows import LookedUpRowsRegularizer
from keras_embed.layers.quantization import QuantizationMixin
from keras_embed.layers.table_reads import is_updated_by_rows
from keras_embed.layers.table_reads import mark_layer_variables


@keras.saving.register_keras_serializable(package="keras_embed")
class Embedding(LoraMixin, QuantizationMixin, keras.layers.Layer):
    """Turns nonnegative integers (indexes) into dense vectors of fixed size.

    e.g. `[[4], [20]] -> [[0.25, 0.1], [0.6, -0.2]]`

    A drop-in replacement for `keras.layers.Embedding`: the same arguments,
    weights and outputs, plus Keras 2's `input_length`.

    Example:

    >>> import keras, numpy as np
    >>> from keras_embed import Embedding
    >>> model = keras.Sequential([Embedding(1000, 64, input_length=10)])
    >>> model.output_shape
    (None, 10, 64)
    >>> model.predict(np.random.randint(1000, size=(32, 10)), verbose=0).shape
    (32, 10, 64)

    Args:
        input_dim: Integer. Size of the vocabulary, i.e. maximum integer
            index + 1.
        output_dim: Integer. Dimension of the dense embedding.
        embeddings_initializer: Initializer for the `embeddings` matrix (see
            `keras.initializers`).
        embeddings_regularizer: Regularizer function applied to the
            `embeddings` matrix (see `keras.regularizers`). Wrapped in
            `keras_embed.LookedUpRowsRegularizer`, it is applied to the rows
            each batch looks up instead, which keeps the table's gradient
            sparse.
        embeddings_constraint: Constraint function applied to the
            `embeddings` matrix (see `keras.constraints`).
        mask_zero: Boolean, whether the input value 0 is a special "padding"
            value that should be masked out. If `True`, index 0 cannot be
            used in the vocabulary (`input_dim` should equal the size of the
            vocabulary + 1), and every later layer must support masking.
        weights: Optional floating-point matrix of shape
            `(input_dim, output_dim)`: the initial embeddings.
        lora_rank: Optional positive integer: the rank of a LoRA (Low-Rank
            Adaptation) delta over a frozen table, enabled when the layer
            is built (see `enable_lora`). `None` or 0: no LoRA.
        lora_alpha: Optional positive number: the LoRA delta is scaled by
            `lora_alpha / lora_rank`. Defaults to `lora_rank`.
        quantization_config: Optional `keras.quantizers.QuantizationConfig`
            for a quantized dtype policy (e.g. `dtype="int8_from_float32"`):
            its `block_size` (int4) and weight quantizer (see `quantize`).
        input_length: Keras 2's length of input sequences: an integer, or a
            tuple with one entry (integer or `None`) per non-batch axis for
            inputs of rank > 2. Unknown input dims take their length from it;
            known dims must agree with it. As the first layer of a
            `keras.Sequential`, the layer gives the model an integer input of
            shape `(None, *input_length)` (`(None, None)` without it), and
            the model is built at once.
        **kwargs: Base layer arguments: `name`, `dtype`, `trainable`,
            `activity_regularizer`.

    Attributes:
        embeddings: the table, a float variable of shape
            `(input_dim, output_dim)`, in the policy's variable dtype. With
            LoRA enabled, the table plus the delta (a tensor); quantized,
            the integer codes (int4 unpacked to int8), as in stock Keras.
        lora_enabled: whether `enable_lora` ran.
        input_length: the `input_length` given, or `None`.

    Input shape:
        `(*)`: integer ids in `[0, input_dim)` of any shape, usually
        `(batch_size, sequence_length)`. Floats holding whole numbers are
        accepted and converted, as in stock Keras.

    Output shape:
        `(*, output_dim)`, in the policy's compute dtype, where `*` is the
        input shape with unknown dims filled in from `input_length`.
    """

    def __init__(
        self,
        input_dim,
        output_dim,
        embeddings_initializer="uniform",
        embeddings_regularizer=None,
        embeddings_constraint=None,
        mask_zero=False,
        weights=None,
        lora_rank=None,
        lora_alpha=None,
        quantization_config=None,
        input_length=None,
        **kwargs,
    ):
        # Keras 2 spelled the input shape `batch_input_shape` (with the batch
        # dim) or `input_shape` (without); we take both, with no warning.
        check_backend()
        batch_input_shape = kwargs.pop("batch_input_shape", None)
        input_shape = kwargs.pop("input_shape", None)
        super().__init__(**kwargs)
        # Checked before anything is built: a config may come from a file.
        config_checks.check_size(self.name, "input_dim", input_dim)
        config_checks.check_size(self.name, "output_dim", output_dim)
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
        self.supports_masking = self.mask_zero
        self.autocast = False
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha if lora_alpha is not None else lora_rank
        self.quantization_config = quantization_config
        self.input_length = input_length_rules.standardize(
            input_length, self.name
        )
        # The input a Sequential led by this layer gets. Keras 2 derived its
        # shapes from `input_length` (and wrote `[None, [3, 4]]` for tuples),
        # so `input_length` wins. One rule everywhere (constructor,
        # `from_config`, every file format): `batch_input_shape` has the
        # batch dim, `input_shape` has not; `get_config` writes the shape
        # given as `batch_input_shape`.
        self._given_batch_input_shape = None
        if self.input_length is None and batch_input_shape is not None:
            self._given_batch_input_shape = config_checks.check_batch_shape(
                self.name, "batch_input_shape", batch_input_shape, True
            )
        elif self.input_length is None and input_shape is not None:
            self._given_batch_input_shape = (None, *config_checks.check_batch_shape(
                self.name, "input_shape", input_shape, False
            ))
        self._batch_input_shape = (
            self._given_batch_input_shape
            or input_length_rules.batch_shape(self.input_length)
        )
        if weights is not None:
            self._set_initial_weights(weights)

    @classmethod
    def from_pretrained(cls, matrix, freeze=True, **kwargs):
        """A layer whose table is `matrix`, frozen by default.

        As PyTorch's `nn.Embedding.from_pretrained`: `input_dim` and
        `output_dim` come from the matrix's shape. The layer saves and loads
        as any other (`trainable` is in its config, the table in its
        weights).

        Example:

        >>> import numpy as np
        >>> from keras_embed import Embedding
        >>> layer = Embedding.from_pretrained(np.eye(3, 2), mask_zero=True)
        >>> layer.input_dim, layer.output_dim, layer.trainable
        (3, 2, False)
        >>> np.asarray(layer(np.array([[2, 0]])))[0].tolist()
        [[0.0, 0.0], [1.0, 0.0]]

        Args:
            matrix: array of shape `(input_dim, output_dim)`: the table, e.g.
                `keras_embed.pretrained.load_vectors(...).matrix`.
            freeze: `True` (default): the table is not trained
                (`trainable=False`); `False`: it is.
            **kwargs: the layer's other arguments (`mask_zero`, `name`,
                `embeddings_regularizer`, ...), except `input_dim`,
                `output_dim`, `weights` and `trainable`.
        """
        for taken in ("input_dim", "output_dim", "weights", "trainable"):
            if taken in kwargs:
                raise TypeError(
                    f"Embedding.from_pretrained: `{taken}` comes from `matrix`"
                    f" and `freeze`; do not pass it. Received: {taken}="
                    f"{kwargs[taken]!r}."
                )
        shape = getattr(matrix, "shape", None)
        if shape is None or len(shape) != 2:
            raise ValueError(
                "Embedding.from_pretrained: `matrix` must be 2-D, of shape "
                "(input_dim, output_dim). Received: "
                + ("an object without a shape" if shape is None
                   else f"shape {tuple(shape)}") + "."
            )
        return cls(int(shape[0]), int(shape[1]), weights=matrix,
                   trainable=not freeze, **kwargs)

    @property
    def supports_jit(self):
        """False while Keras resolves `jit_compile="auto"`: a model with this
        layer then runs without XLA, where the id check can raise (see
        `keras_embed.layers.jit_default`). True for an explicit
        `jit_compile=True`, unless set to False."""
        return self._supports_jit and jit_default.supports_jit()

    @supports_jit.setter
    def supports_jit(self, value):
        self._supports_jit = value  # keras.layers.Layer sets True.

    def _set_initial_weights(self, weights):
        weights = config_checks.check_weights(
            self.name, weights, self.input_dim, self.output_dim
        )
        self.build()
        self._assign_table(weights)

    def build(self, input_shape=None):
        if self.built:
            return
        shape = (self.input_dim, self.output_dim)
        if self.quantization_mode:
            # A quantized dtype policy, e.g. "int8_from_float32".
            self.quantized_build(shape, self.quantization_mode, self.quantization_config)
        else:
            self._embeddings = self.add_weight(
                shape=shape,
                initializer=self.embeddings_initializer,
                name="embeddings",
                # A regularizer of the looked-up rows is applied in `call`.
                regularizer=None if self._regularizes_rows() else self.embeddings_regularizer,
                constraint=self.embeddings_constraint,
                trainable=True,
            )
        self.built = True
        if self.lora_rank:
            self.enable_lora(self.lora_rank, lora_alpha=self.lora_alpha)
        mark_layer_variables(self)

    @property
    def embeddings(self):
        if not self.built:
            raise AttributeError(
                f"Embedding layer '{self.name}' is not built yet: call it on "
                "some ids or call `layer.build()` before reading `embeddings`."
            )
        if self.quantization_mode:
            # The integer codes, as stock: int8, int4 unpacked to int8.
            return self._stored_codes()
        if self.lora_enabled:
            return ops.cast(
                ops.add(self._embeddings, self._lora_delta()), self.compute_dtype
            )
        return self._embeddings

    def call(self, inputs):
        given = input_length_rules.ensure(inputs, self.input_length, self.name)
        xla = in_xla_context()
        ids = checked_ids(given, self.input_dim, self.name, xla)
        if isinstance(ids, tf.SparseTensor):
            # Positions the sparse tensor leaves out look up row 0, as stock.
            ids = tf.sparse.to_dense(ids)
        outputs = self._look_up(ids)
        if self._regularizes_rows():
            flat_ids = ids.flat_values if isinstance(ids, tf.RaggedTensor) else ids
            self.add_loss(
                self.embeddings_regularizer.rows_penalty(self._table_rows, flat_ids)
            )
        # Under XLA no check can raise: bad ids get NaN rows instead.
        outputs = nan_rows_for_bad_ids(outputs, given, self.input_dim, xla)
        return ops.cast(outputs, self.compute_dtype)

    def _regularizes_rows(self):
        """Whether the regularizer applies to the looked-up rows only."""
        return isinstance(self.embeddings_regularizer, LookedUpRowsRegularizer) and not (
            self.quantization_mode
        )

    def _table_rows(self, ids):
        """Rows of the table (without LoRA's delta) at 1-D `ids`, read as the
        lookup reads them."""
        table = self._embeddings
        if is_updated_by_rows(table) or isinstance(
            table.value, tf.__internal__.distribute.ShardedVariable
        ):
            table = table.value
        return tf.gather(table, ids)

    def _look_up(self, ids):
        """The table's rows at `ids` (dense or ragged), LoRA delta added."""
        if isinstance(ids, tf.RaggedTensor):
            return tf.ragged.map_flat_values(self._look_up, ids)
        if self.quantization_mode:
            rows = self._dequantized_rows(ids)
        else:
            # Read the table as its optimizer writes it. After row updates
            # (LazyAdam's scatters) TensorFlow copies the whole table on each
            # dense read; after a row read it copies it on each dense update.
            table = self._embeddings
            sharded = tf.__internal__.distribute.ShardedVariable
            if isinstance(table.value, sharded):
                # Split by rows (ParameterServerStrategy's partitioner): gather
                # from each shard, which takes 1-D ids; a dense read would
                # concatenate the whole table. See docs/scaling.md.
                rows = tf.gather(table.value, tf.reshape(ids, [-1]))
                shape = tf.concat([tf.shape(ids), [self.output_dim]], 0)
                rows = tf.reshape(rows, shape)
            else:
                if is_updated_by_rows(table):
                    table = table.value  # The tf.Variable: a row read.
                rows = tf.gather(table, ids)
        if self.lora_enabled:
            rows = ops.add(rows, self._lora_rows(ids))
        return rows

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        if isinstance(inputs, tf.SparseTensor):
            # Entries the sparse tensor leaves out look up row 0, padding.
            inputs = tf.sparse.to_dense(inputs)
        return ops.not_equal(inputs, 0)

    def compute_output_shape(self, input_shape):
        shape = input_length_rules.resolve(
            input_shape, self.input_length, self.name
        )
        return (*shape, self.output_dim)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(
            self.compute_output_shape(inputs.shape),
            dtype=self.compute_dtype,
            ragged=getattr(inputs, "ragged", False),
        )

    def save_own_variables(self, store):
        """Saves the table in stock Keras's layout, LoRA delta merged in."""
        if not self.built:
            return
        for index, value in enumerate(self._saved_values()):
            store[str(index)] = value

    def load_own_variables(self, store):
        """Loads a table saved by this layer or by stock Keras's.

        With LoRA enabled, `lora_embeddings_a` gets fresh values from its
        initializer and `lora_embeddings_b` zeros: the delta is zero (the
        file's table already holds it), and training moves it again.
        """
        if not self.built:
            # Stock's rule and message: an error if the file lists variables.
            keras.layers.Layer.load_own_variables(self, store)
            return
        variables = self._saved_variables()
        config_checks.check_saved_shapes(self, variables, store)
        for index, variable in enumerate(variables):
            variable.assign(store[str(index)])
        if self.lora_enabled:
            self._reset_lora()

    def _keras2_input_layer(self):
        """The integer input Keras 2 gave a `Sequential` led by this layer."""
        return keras.layers.InputLayer(
            batch_shape=self._batch_input_shape, dtype="int32"
        )

    def get_config(self):
        config = {
            **super().get_config(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
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
            "input_length": self.input_length,
        }
        if self._given_batch_input_shape is not None:
            config["batch_input_shape"] = self._given_batch_input_shape
        if self.lora_rank:
            config["lora_rank"] = self.lora_rank
            config["lora_alpha"] = self.lora_alpha
        return config

    @classmethod
    def from_config(cls, config):
        """Builds the layer from a Keras 3 config, ours, or a Keras 2 one."""
        return layer_from_config(super().from_config, config)

    def __repr__(self):
        sizes = f"{self.input_dim}, {self.output_dim}"
        if self.mask_zero:
            sizes += ", mask_zero=True"
        if self.input_length is not None:
            sizes += f", input_length={self.input_length!r}"
        return f"<Embedding name={self.name}, {sizes}>"
