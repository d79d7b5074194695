"""Errors raised while a graph runs, with the layer's message first.

When an op fails while a graph runs (`tf.function`, `model.fit`, `predict`,
`evaluate`, a loaded SavedModel), TensorFlow's message starts with "Graph
execution error:", then lists where each failing op was defined, and only at
the end gives the op's own message, for the id check:

    assertion failed: [Embedding layer \\'words\\' received id 12, which is ...]

with its quotes escaped. `install` makes TensorFlow put that sentence first,
unescaped, above the rest (kept as it was):

    Embedding layer 'words' received id 12, which is outside the valid range
    [0, input_dim) = [0, 10).

    Graph execution error:
    ...

Errors that do not come from our checks are left as they are. If a future
TensorFlow moves the class this wraps, `install` does nothing and errors keep
TensorFlow's layout, our sentence still in them.
"""

import codecs
import re

from keras_embed.layers.ids import CHECK_OP_NAME

# Our check's Assert prints its one string as "[...]"; it starts thus, and
# TensorFlow names the failing node on the next line. Only an Assert named
# by our check counts: a user's own Assert worded like ours is left alone.
_OUR_ASSERT = re.compile(
    r"assertion failed: \[(Embedding layer \\'.*?)\]\n\t \[\[\{\{node ([^}]*)\}\}", re.M
)


def headline(message):
    """The sentence of our check in a graph error message, or `None`.

    `None` too for an `Assert` that says what ours says but is not ours
    (its node is not named `CHECK_OP_NAME`).
    """
    found = _OUR_ASSERT.search(message)
    if found is None:
        return None
    node = found.group(2).split("/")
    if len(node) < 2 or node[-2] != CHECK_OP_NAME:
        return None
    # The Assert op wrote the sentence C-escaped (quotes, non-ASCII bytes).
    escaped = found.group(1).encode("ascii", "backslashreplace")
    return codecs.escape_decode(escaped)[0].decode("utf-8", "replace")


def install():
    """Wraps TensorFlow's graph error formatting; safe to call twice."""
    try:
        from tensorflow.python.eager.polymorphic_function import atomic_function

        formatter = atomic_function.InterpolateRuntimeError
        stock_interpolate = formatter.interpolate
    except (ImportError, AttributeError):
        return
    if getattr(stock_interpolate, "_keras_embed_headline", False):
        return

    def interpolate(self, message, node_names, graph_debug_info):
        text = stock_interpolate(self, message, node_names, graph_debug_info)
        first = headline(message)
        return text if first is None else f"{first}\n\n{text}"

    interpolate._keras_embed_headline = True
    interpolate.__wrapped__ = stock_interpolate
    formatter.interpolate = interpolate
