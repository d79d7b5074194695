"""LoRA (Low-Rank Adaptation) for `keras_embed.Embedding`.

`layer.enable_lora(rank)` freezes the table and adds two trainable float32
matrices, `lora_embeddings_a` `(input_dim, rank)` and `lora_embeddings_b`
`(rank, output_dim)`. The layer then looks up

    table[ids] + (lora_alpha / rank) * lora_embeddings_a[ids] @ lora_embeddings_b

computing the delta only for the rows it reads (stock Keras forms the whole
`(input_dim, output_dim)` delta on every call). `b` starts at zeros, so
enabling LoRA leaves the outputs unchanged until training moves it.

Saving merges the delta into the table and leaves the LoRA matrices out, so
the file has the layout of a layer without LoRA: it loads into one, or into
stock `keras.layers.Embedding`. Loading into a layer with LoRA enabled gives
`lora_embeddings_a` fresh values from its initializer and sets
`lora_embeddings_b` to zeros: the delta is zero (the file's table already
holds it), and training moves it again (stock Keras zeroes both, which
leaves both gradients zero for good).
"""

import tensorflow as tf
from keras import initializers
from keras import ops

from keras_embed.layers import config_checks
from keras_embed.layers.table_reads import mark_layer_variables


class LoraMixin:
    """`enable_lora` and the LoRA delta, for `keras_embed.Embedding`."""

    lora_enabled = False

    def enable_lora(
        self,
        rank,
        lora_alpha=None,
        a_initializer="he_uniform",
        b_initializer="zeros",
    ):
        """Freezes the table and adds a trainable low-rank delta to it.

        >>> from keras_embed import Embedding
        >>> layer = Embedding(10_000, 64)
        >>> layer.build()
        >>> layer.enable_lora(4)
        >>> [w.name for w in layer.trainable_weights]
        ['lora_embeddings_a', 'lora_embeddings_b']

        Args:
            rank: positive integer, the rank of the delta.
            lora_alpha: positive number: the delta is scaled by
                `lora_alpha / rank`. Defaults to `rank` (a scale of 1).
            a_initializer: initializer of `lora_embeddings_a`
                `(input_dim, rank)`.
            b_initializer: initializer of `lora_embeddings_b`
                `(rank, output_dim)`; zeros keep the outputs unchanged.

        Raises:
            ValueError: if the layer has an `embeddings_constraint`, is not
                built, already has LoRA enabled, or `rank` is not a positive
                integer; `config_checks.InvalidConfigError` (a `ValueError`)
                if `lora_alpha` is not a positive number.
        """
        if self.embeddings_constraint:
            raise ValueError(
                "Lora is incompatible with embedding constraints. "
                "In order to enable lora on this layer, remove the "
                f"`embeddings_constraint` argument (Embedding layer "
                f"'{self.name}' has embeddings_constraint="
                f"{self.embeddings_constraint!r})."
            )
        if not self.built:
            raise ValueError(
                "Cannot enable lora on a layer that isn't yet built: call "
                f"Embedding layer '{self.name}' on some ids or call "
                "`layer.build()` first."
            )
        if self.lora_enabled:
            raise ValueError(
                "lora is already enabled. This can only be done once per "
                f"layer (Embedding layer '{self.name}' has "
                f"lora_rank={self.lora_rank})."
            )
        if not config_checks.is_integer(rank):
            raise ValueError(
                "`rank` must be a positive integer. "
                f"Received: rank={rank!r} (of type {type(rank).__name__})."
            )
        lora_alpha = config_checks.check_lora_alpha(self.name, lora_alpha)
        was_locked = self._tracker.locked
        self._tracker.unlock()
        # Float32 whatever the policy: a low-precision delta would underflow
        # as it trains. Saving merges it in the table's own dtype.
        # Kept: a reload draws `lora_embeddings_a` from it again.
        self._lora_a_initializer = initializers.get(a_initializer)
        self.lora_embeddings_a = self.add_weight(
            name="lora_embeddings_a",
            shape=(self.input_dim, rank),
            initializer=self._lora_a_initializer,
            dtype="float32",
            regularizer=self.embeddings_regularizer,
        )
        self.lora_embeddings_b = self.add_weight(
            name="lora_embeddings_b",
            shape=(rank, self.output_dim),
            initializer=initializers.get(b_initializer),
            dtype="float32",
            regularizer=self.embeddings_regularizer,
        )
        self._embeddings.trainable = False
        if was_locked:
            self._tracker.lock()
        self.lora_enabled = True
        mark_layer_variables(self)
        self.lora_rank = int(rank)
        self.lora_alpha = lora_alpha if lora_alpha is not None else self.lora_rank

    @property
    def _lora_scale(self):
        """`lora_alpha / lora_rank`, the factor applied to the delta."""
        return self.lora_alpha / self.lora_rank

    def _lora_delta(self):
        """The whole delta, `(input_dim, output_dim)` float32."""
        return self._lora_scale * ops.matmul(
            self.lora_embeddings_a, self.lora_embeddings_b
        )

    def _lora_rows(self, ids):
        """The delta's rows at `ids` (a dense tensor): `(*ids.shape, output_dim)`."""
        rows_a = tf.gather(self.lora_embeddings_a, ids)
        return self._lora_scale * ops.matmul(rows_a, self.lora_embeddings_b)

    def _reset_lora(self):
        """After a load: `lora_embeddings_a` from its initializer, `b` zeros.

        The delta is then zero (the loaded table holds it), and the
        gradient of `b` is not (it is `a`'s rows times the output's), so
        training moves the delta again. Zeros in both would leave both
        gradients zero for good.
        """
        a, b = self.lora_embeddings_a, self.lora_embeddings_b
        a.assign(self._lora_a_initializer(a.shape, a.dtype))
        b.assign(ops.zeros(b.shape, b.dtype))
