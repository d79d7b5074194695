"""Int8 and int4 quantization of the embedding table, on `keras.quantizers`.

`layer.quantize("int8")` stores each row of the table as int8 codes and one
float scale (`row = codes / scale`). `layer.quantize("int4")` stores 4-bit
codes, two to a byte: per row with one scale (`block_size=None` or `-1`), or
per group of `block_size` columns with a scale and a zero point each
(`row = (codes - zero) * scale`, the default, `block_size=128`).

The variables, their names, shapes, dtypes and saved order are stock Keras's
(`embeddings`, `embeddings_scale`, `embeddings_zero`, `g_idx`), and the codes
come from the same `keras.quantizers` functions, so our quantized table is
stock's, bit for bit: `.weights.h5` files go both ways, and lookups return
the same numbers. A lookup dequantizes only the rows it reads.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops
from keras import quantizers

MODES = ("int8", "int4")

# Stock Keras's saved layout: variable names, in store order, per mode.
SAVED_VARIABLES = {
    None: ("embeddings",),
    "int8": ("embeddings", "embeddings_scale"),
    "int4": ("embeddings", "embeddings_scale", "embeddings_zero", "g_idx"),
}

_INT4_RANGE = (-8, 7)


def int4_block_size(layer, config=None):
    """The int4 group width for `layer`: `None` or `-1` mean per row.

    From `config` (a `keras.quantizers.Int4QuantizationConfig`) if given,
    else from an int4 dtype policy such as `"int4/128_from_float32"`, else
    `None` (`"int4_from_float32"` predates groups and is per row).
    """
    if isinstance(config, quantizers.Int4QuantizationConfig):
        return config.block_size
    block_size = getattr(_own_policy(layer), "block_size", None)
    return None if block_size == -1 else block_size


def _own_policy(layer):
    policy = layer.dtype_policy
    if isinstance(policy, keras.dtype_policies.DTypePolicyMap):
        policy = policy[layer.path]
    return policy


def is_grouped(block_size):
    return block_size is not None and block_size > 0


def quantize_table(table, mode, config=None, block_size=None):
    """Quantizes a `(input_dim, output_dim)` float table row by row.

    Args:
        table: the float table.
        mode: `"int8"` or `"int4"`.
        config: optional `keras.quantizers.QuantizationConfig`; its
            `weight_quantizer`, if any, replaces the default
            `AbsMaxQuantizer(axis=-1)` (per-row modes only).
        block_size: int4 group width; `None` or `-1` for one scale per row.

    Returns:
        `(codes, scale, zero)`: int8 codes of shape `(input_dim, output_dim)`
        (int4: two codes a byte, `(input_dim, ceil(output_dim / 2))`), the
        scales (`(input_dim,)`, or `(input_dim, groups)` when grouped), and
        the zero points (grouped int4 only, else `None`).
    """
    if mode == "int4" and is_grouped(block_size):
        # The quantizer groups along axis 0; our groups run along a row.
        codes, scale, zero = quantizers.abs_max_quantize_grouped_with_zero_point(
            ops.transpose(table),
            block_size=block_size,
            value_range=_INT4_RANGE,
            dtype="int8",
            to_numpy=True,
        )
        codes, scale, zero = (ops.transpose(t) for t in (codes, scale, zero))
    else:
        if mode == "int8":
            default = quantizers.AbsMaxQuantizer(axis=-1)
        else:
            default = quantizers.AbsMaxQuantizer(
                axis=-1, value_range=_INT4_RANGE, output_dtype="int8"
            )
        quantizer = quantizers.QuantizationConfig.weight_quantizer_or_default(
            config, default
        )
        codes, scale = quantizer(table, to_numpy=True)
        if tuple(scale.shape) != (table.shape[0], 1):
            raise ValueError(
                "An Embedding table is quantized row by row, so its weight "
                "quantizer must reduce over the last axis (axis=-1) and give "
                f"one scale per row, of shape ({table.shape[0]}, 1). "
                f"Received: a scale of shape {tuple(scale.shape)} from "
                f"{quantizer!r}."
            )
        scale = ops.squeeze(scale, axis=-1)
        zero = None
    if mode == "int4":
        codes, _, _ = quantizers.pack_int4(codes, axis=-1)
    return codes, scale, zero


def dequantize_rows(codes, scale, zero, column_groups, mode, output_dim):
    """Float rows from the stored rows of a quantized table.

    Args:
        codes: stored codes of some rows, `(n, output_dim)` int8, or
            `(n, ceil(output_dim / 2))` packed int4.
        scale: their scales, `(n,)`, or `(n, groups)` when grouped.
        zero: their zero points `(n, groups)`, or `None` (per-row scales).
        column_groups: the group of each column, `(output_dim,)` (`g_idx`),
            used when `zero` is given.
        mode: `"int8"` or `"int4"`.
        output_dim: the unpacked row width.

    Returns:
        `(n, output_dim)` rows in the scale's dtype.
    """
    if mode == "int4":
        codes = quantizers.unpack_int4(codes, output_dim, axis=-1)
    values = ops.cast(codes, scale.dtype)
    if zero is None:
        return ops.divide(values, ops.expand_dims(scale, axis=-1))
    groups = ops.cast(column_groups, "int32")
    zero = ops.cast(ops.take(zero, groups, axis=-1), scale.dtype)
    return ops.multiply(ops.subtract(values, zero), ops.take(scale, groups, axis=-1))


class QuantizationMixin:
    """Keras's quantization protocol for `keras_embed.Embedding`.

    `quantize`, `quantized_build` and the quantized calls, as stock
    `keras.layers.Embedding` has them; `model.quantize(...)` finds them.
    """

    def quantize(self, mode=None, type_check=True, config=None):
        """Quantizes the built float table in place, to int8 or int4.

        Keras checks the arguments first: the layer must be built and not
        quantized yet, and `mode`/`config` must agree. Subclasses refuse
        (`NotImplementedError`, as stock) unless `type_check=False`: their
        `call` may not be the lookup this method quantizes.

        >>> from keras_embed import Embedding
        >>> layer = Embedding(1000, 64)
        >>> layer.build()
        >>> layer.quantize("int4")       # groups of 128 columns
        >>> layer.dtype_policy.name
        'int4/128_from_float32'

        Args:
            mode: `"int8"` or `"int4"`.
            type_check: refuse subclasses of the layer.
            config: optional `keras.quantizers.Int8QuantizationConfig` or
                `Int4QuantizationConfig` (`block_size`, `weight_quantizer`).
        """
        if type_check and type(self) is not _quantizable_class(type(self)):
            raise self._not_implemented_error(self.quantize)
        if mode not in MODES:
            raise self._quantization_mode_error(mode)
        # The layer's own policy, also under a `DTypePolicyMap` (whose
        # `quantization_mode` and `name` are its default policy's).
        policy = _own_policy(self)
        if policy.quantization_mode == "int4" and getattr(policy, "block_size", None) is not None:
            # Reached from `layer.dtype_policy = "int4/64_from_float32"`:
            # Keras passes a default config, the policy says what was asked.
            config = quantizers.Int4QuantizationConfig(block_size=policy.block_size)
        block_size = int4_block_size(self, config) if mode == "int4" else None
        codes, scale, zero = quantize_table(
            tf.convert_to_tensor(self._embeddings), mode, config, block_size
        )
        self.quantization_config = config
        del self._embeddings
        self.quantized_build((self.input_dim, self.output_dim), mode, config)
        self._assign_quantized(codes, scale, zero)
        if policy.quantization_mode is None:
            if mode == "int4":
                mode = f"int4/{-1 if block_size is None else block_size}"
            self.dtype_policy = f"{mode}_from_{policy.name}"

    def quantized_build(self, embeddings_shape, mode, config=None):
        """Adds the variables of a quantized table (stock's names and shapes).

        Args:
            embeddings_shape: `(input_dim, output_dim)`.
            mode: `"int8"` or `"int4"`.
            config: optional quantization config (int4: its `block_size`).
        """
        if mode not in MODES:
            raise self._quantization_mode_error(mode)
        input_dim, output_dim = embeddings_shape
        block_size = int4_block_size(self, config) if mode == "int4" else None
        packed_dim = (output_dim + 1) // 2 if mode == "int4" else output_dim
        self._embeddings = self.add_weight(
            name="embeddings",
            shape=(input_dim, packed_dim),
            initializer="zeros",
            dtype="int8",
            trainable=False,
        )
        if is_grouped(block_size):
            scale_shape = (input_dim, -(-output_dim // block_size))
        else:
            scale_shape = (input_dim,)
        self.embeddings_scale = self.add_weight(
            name="embeddings_scale",
            shape=scale_shape,
            initializer="ones",
            trainable=False,
        )
        if is_grouped(block_size):
            self.embeddings_zero = self.add_weight(
                name="embeddings_zero",
                shape=scale_shape,
                initializer="zeros",
                dtype="int8",
                trainable=False,
            )
            self.g_idx = self.add_weight(
                name="g_idx",
                shape=(output_dim,),
                initializer="zeros",
                dtype="float32",
                trainable=False,
            )
            self.g_idx.assign(np.arange(output_dim) // block_size)
        self._is_quantized = True

    @property
    def _int4_block_size(self):
        """The int4 group width the table is stored with (stock's attribute).

        From the same config and policy `quantized_build` read it from:
        `quantize` stores its config before building, and the policy it sets
        afterwards names the same block size.
        """
        return int4_block_size(self, self.quantization_config)

    def _int8_call(self, inputs, training=None):
        return self.call(inputs)

    def _int4_call(self, inputs, training=None):
        return self.call(inputs)

    def _stored_codes(self):
        """The integer codes of the table: int8, int4 unpacked to int8."""
        if self.quantization_mode == "int4":
            return quantizers.unpack_int4(self._embeddings, self.output_dim, axis=-1)
        return self._embeddings

    def _assign_table(self, table):
        """Sets the table from floats, quantizing them if the layer is."""
        mode = self.quantization_mode
        if mode is None:
            self._embeddings.assign(table)
            return
        self._assign_quantized(
            *self._requantized(ops.convert_to_tensor(table, self.variable_dtype))
        )

    def _requantized(self, table):
        """`(codes, scale, zero)` of a float table, quantized as this layer's
        is: same mode, block size and weight quantizer."""
        return quantize_table(
            table, self.quantization_mode, self.quantization_config, self._int4_block_size
        )

    def _assign_quantized(self, codes, scale, zero):
        self._embeddings.assign(codes)
        self.embeddings_scale.assign(scale)
        if zero is not None:
            self.embeddings_zero.assign(zero)

    def _dequantized_rows(self, ids):
        """The float rows of a quantized table at `ids` (a dense tensor)."""
        flat_ids = tf.reshape(ids, [-1])
        zero = getattr(self, "embeddings_zero", None)
        rows = dequantize_rows(
            tf.gather(self._embeddings.value, flat_ids),
            tf.gather(self.embeddings_scale.value, flat_ids),
            None if zero is None else tf.gather(zero.value, flat_ids),
            getattr(self, "g_idx", None),
            self.quantization_mode,
            self.output_dim,
        )
        shape = tf.concat([tf.shape(ids), [self.output_dim]], axis=0)
        rows = tf.reshape(rows, shape)
        rows.set_shape(ids.shape.concatenate([self.output_dim]))
        return rows

    def _dequantized_table(self):
        """The whole quantized table as floats, `(input_dim, output_dim)`."""
        return self._dequantized_rows(tf.range(self.input_dim))

    def _saved_values(self):
        """The values to save, in stock's order, LoRA delta merged in.

        A float table is saved in the variable dtype. A quantized table with
        LoRA is dequantized, the delta added, and quantized again the same
        way (mode, block size, weight quantizer), so the file holds the
        layout of a layer without LoRA.
        """
        mode = self.quantization_mode
        if mode is None:
            table = self._embeddings
            if self.lora_enabled:
                table = ops.cast(
                    ops.add(table, self._lora_delta()), self.variable_dtype
                )
            return [table]
        names = SAVED_VARIABLES[mode]
        values = dict(zip(names, self._variables_by_name(names)))
        if self.lora_enabled:
            merged = ops.add(self._dequantized_table(), self._lora_delta())
            codes, scale, zero = self._requantized(merged)
            values.update(embeddings=codes, embeddings_scale=scale)
            if zero is not None:
                values["embeddings_zero"] = zero
        return [value for value in values.values() if value is not None]

    def _saved_variables(self):
        """The variables a saved store fills, in stock's order."""
        variables = self._variables_by_name(SAVED_VARIABLES[self.quantization_mode])
        return [variable for variable in variables if variable is not None]

    def _variables_by_name(self, names):
        # `embeddings` is a property (unpacked codes, LoRA delta): read the
        # variable behind it.
        return [
            self._embeddings if name == "embeddings" else getattr(self, name, None)
            for name in names
        ]

    def _quantization_mode_error(self, mode):
        return NotImplementedError(
            f"Invalid quantization mode. Expected one of {MODES}. "
            f"Received: quantization_mode={mode} (Embedding layer "
            f"'{self.name}')."
        )


def _quantizable_class(cls):
    """The class that took `QuantizationMixin` in: its subclasses refuse."""
    return next(c for c in cls.__mro__ if QuantizationMixin in c.__bases__)
