"""Graph errors from our id check lead with its sentence, unescaped; other
graph errors are left as TensorFlow writes them."""

import pytest
import tensorflow as tf

import keras_embed  # noqa: F401  (installs the wrapper)
from keras_embed.layers import graph_errors


def test_headline_is_the_unescaped_sentence_of_our_assert():
    message = (
        "assertion failed: [Embedding layer \\'user_ids\\' received id 12, which is "
        "outside the valid range [0, input_dim) = [0, 10).]\n"
        "\t [[{{node sequential/user_ids/keras_embed_check_ids/Assert}}]]"
    )
    assert graph_errors.headline(message) == (
        "Embedding layer 'user_ids' received id 12, which is outside the valid "
        "range [0, input_dim) = [0, 10)."
    )


@pytest.mark.parametrize(
    "message",
    ["assertion failed: [x must be positive]",
     "indices[0,1] = 12 is not in [0, 10)",
     "assertion failed: [Embedding layer] [12]"],
)
def test_other_messages_have_no_headline(message):
    assert graph_errors.headline(message) is None


def test_other_graph_errors_are_left_as_they_are():
    @tf.function
    def fails(x):
        tf.debugging.Assert(x > 0, ["x must be positive"])
        return x

    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        fails(tf.constant(-1))
    assert str(error.value).startswith("Graph execution error:")
    assert "x must be positive" in str(error.value)


def test_install_twice_wraps_once():
    from tensorflow.python.eager.polymorphic_function import atomic_function

    wrapped = atomic_function.InterpolateRuntimeError.interpolate
    graph_errors.install()
    assert atomic_function.InterpolateRuntimeError.interpolate is wrapped
    assert wrapped._keras_embed_headline
