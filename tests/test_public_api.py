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
    assert sorted(keras_embed.__all__) == ["Embedding", "optimizers", "swap", "unswap"]


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


def test_command_line_entry_points():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    script = os.path.join(os.path.dirname(sys.executable), "keras-embed")
    for command in ([script], [sys.executable, "-m", "keras_embed"]):
        result = subprocess.run([*command, "--help"], capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("usage: keras-embed")
        for subcommand in ("demo", "inspect", "convert", "bench"):
            assert subcommand in result.stdout
