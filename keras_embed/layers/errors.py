"""The errors our layers raise, and how they reach the user as written.

`InvalidConfigError` is the error of a bad argument or config field;
`complete_error` marks an error whose first line is already the one to read,
so that Keras and `tf.function` raise it without wrapping it.

Example:

>>> error = complete_error(ValueError("Embedding layer 'words': ..."))
>>> error.ag_pass_through
True
"""


class InvalidConfigError(ValueError, TypeError):
    """An argument or config field of the wrong kind or size; the message
    names the layer and the field.

    A `ValueError`, as stock's constructor raises, and a `TypeError`, as
    stock's `from_config` raises for the same fields.
    """


def complete_error(error):
    """Marks `error` as complete, so that Keras raises it as it is.

    Keras re-raises errors from a layer's `call` under a first line of its
    own ("Exception encountered when calling ..."), and AutoGraph errors
    raised while tracing a `tf.function` under "in user code:"; ours
    already say which layer, and their first line is the one to read.
    """
    error._keras_call_info_injected = True
    # And so that `tf.function` tracing raises it as it is, not under
    # "in user code:".
    error.ag_pass_through = True
    return error
