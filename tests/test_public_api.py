"""Every public path works as documented, and as it did before the package moved
into wings (layers/, optimizers/, saving/, tools/)."""

import os
import subprocess
import sys

import keras

import keras_embed


def test_top_level_names():
    from keras_embed import Embedding, swap, unswap
    from keras_embed.layers.embedding import Embedding as Defined
    from keras_embed.saving.migration import swap as defined_swap, unswap as defined_unswap

    assert Embedding is Defined and issubclass(Embedding, keras.layers.Layer)
    assert (swap, unswap) == (defined_swap, defined_unswap)
    assert sorted(keras_embed.__all__) == [
        "DynamicEmbedding", "Embedding", "EmbeddingBag", "LookedUpRowsRegularizer", "callbacks",
        "load_keras2_model", "optimizers", "pretrained", "swap", "unswap"]
    from keras_embed import EmbeddingBag
    from keras_embed.layers.embedding_bag import EmbeddingBag as DefinedBag
    from keras_embed.layers.looked_up_rows import LookedUpRowsRegularizer
    from keras_embed.saving.keras2.saved_model import load_keras2_model

    assert EmbeddingBag is DefinedBag and keras_embed.layers.EmbeddingBag is DefinedBag
    assert keras_embed.LookedUpRowsRegularizer is LookedUpRowsRegularizer
    assert keras_embed.layers.LookedUpRowsRegularizer is LookedUpRowsRegularizer
    assert keras_embed.load_keras2_model is load_keras2_model
    from keras_embed import DynamicEmbedding
    from keras_embed.layers.dynamic_embedding import DynamicEmbedding as DefinedDynamic

    assert DynamicEmbedding is DefinedDynamic and keras_embed.layers.DynamicEmbedding is DefinedDynamic
    assert issubclass(DynamicEmbedding, keras.layers.Layer)


def test_vectors_in_and_out_paths():
    from keras_embed.callbacks import EmbeddingProjector, write_projector
    from keras_embed.callbacks.embedding_projector import EmbeddingProjector as Defined
    from keras_embed.pretrained import load_vectors

    assert keras_embed.callbacks.EmbeddingProjector is EmbeddingProjector is Defined
    assert issubclass(EmbeddingProjector, keras.callbacks.Callback)
    assert keras_embed.pretrained.load_vectors is load_vectors and callable(write_projector)
    assert callable(keras_embed.Embedding.from_pretrained)


def test_optimizers_paths():
    from keras_embed.optimizers import LazyAdam, is_updated_by_rows, mark_updated_by_rows
    from keras_embed.layers import table_reads
    from keras_embed.optimizers.lazy_adam import LazyAdam as Defined

    assert LazyAdam is Defined and keras_embed.optimizers.LazyAdam is Defined
    assert (mark_updated_by_rows, is_updated_by_rows) == (
        table_reads.mark_updated_by_rows, table_reads.is_updated_by_rows)
    layer = keras_embed.Embedding(10, 2)
    layer.build()
    mark_updated_by_rows(layer.embeddings)
    assert is_updated_by_rows(layer.embeddings)
    # One module per optimizer, all on the shared row-sparse base.
    from keras_embed.optimizers import adagrad, ftrl, rows, rowwise_adagrad, sgd

    for module, name in ((adagrad, "Adagrad"), (rowwise_adagrad, "RowWiseAdagrad"),
                         (ftrl, "Ftrl"), (sgd, "SGD")):
        assert getattr(keras_embed.optimizers, name) is getattr(module, name)
        assert issubclass(getattr(module, name), rows.RowSparseOptimizer)
    assert issubclass(LazyAdam, rows.RowSparseOptimizer)


def test_the_migration_path_from_before_the_move():
    import keras_embed.migration
    from keras_embed.migration import MigrationWarning
    from keras_embed.saving import migration

    assert MigrationWarning is migration.MigrationWarning and issubclass(MigrationWarning, UserWarning)
    assert keras_embed.migration.swap is keras_embed.swap


def test_registered_names_are_unchanged():
    assert keras.saving.get_registered_name(keras_embed.Embedding) == "keras_embed>Embedding"
    assert keras.saving.get_registered_name(keras_embed.optimizers.LazyAdam) == "keras_embed>LazyAdam"
    assert keras.saving.get_registered_object("keras_embed>Embedding") is keras_embed.Embedding
    assert keras.saving.get_registered_name(keras_embed.EmbeddingBag) == "keras_embed>EmbeddingBag"
    assert keras.saving.get_registered_name(keras_embed.DynamicEmbedding) == "keras_embed>DynamicEmbedding"
    assert keras.saving.get_registered_object("keras_embed>DynamicEmbedding") is keras_embed.DynamicEmbedding


def test_command_line_entry_points():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    script = os.path.join(os.path.dirname(sys.executable), "keras-embed")
    for command in ([script], [sys.executable, "-m", "keras_embed"]):
        result = subprocess.run([*command, "--help"], capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("usage: keras-embed")
        for subcommand in ("demo", "inspect", "convert", "bench"):
            assert subcommand in result.stdout
