"""The graph-error hook moves our id check's sentence first, and only ours:
a user's own `Assert` whose message looks like ours is left where
TensorFlow puts it."""

import numpy as np
import pytest
import tensorflow as tf

import keras_embed

LOOKALIKE = (
    "Embedding layer 'words' received id 12, which is outside the valid range "
    "[0, input_dim) = [0, 10)."
)


def _first_line(error):
    return str(error.value).splitlines()[0]


@pytest.mark.parametrize("name", [None, "check_ids", "words_check"])
def test_a_users_assert_with_our_wording_is_not_moved(name):
    @tf.function
    def users_check(x):
        tf.debugging.Assert(tf.reduce_all(x < 10), [LOOKALIKE], name=name)
        return x

    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        users_check(tf.constant([12]))
    assert _first_line(error) == "Graph execution error:"


@pytest.mark.parametrize("ids", [np.array([[1, 12]]), np.array([[1.5, 2.0]])],
                         ids=["integer", "float"])
def test_our_check_is_still_moved_first(ids):
    layer = keras_embed.Embedding(10, 2, name="words")
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        tf.function(layer)(tf.constant(ids))
    assert _first_line(error).startswith("Embedding layer 'words' received id ")
    assert "Graph execution error:" in str(error.value)
