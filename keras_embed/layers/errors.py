"""The errors our layers raise, and how they reach the user as written.

`InvalidConfigError` is the error of a bad argument or config field;
`complete_error` marks an error whose first line is already the one to read,
so that Keras and `tf.function` raise it without wrapping it.

Example:

>>> error = complete_error(ValueError("Embedding layer 'words': ..."))
>>> error.ag_pass_through
True
"""

import keras


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


def layer_from_config(base_from_config, config):
    """`base_from_config(config)` (a `keras.layers.Layer.from_config`) with
    the config's `quantization_config` deserialized, raising our
    `InvalidConfigError` as it is: Keras reports any error from the
    constructor as a `TypeError` that starts with the whole config, where
    ours name the layer and the field."""
    config = dict(config)
    config["quantization_config"] = keras.saving.deserialize_keras_object(
        config.get("quantization_config")
    )
    try:
        return base_from_config(config)
    except TypeError as error:
        if isinstance(error.__context__, InvalidConfigError):
            raise error.__context__ from None
        raise
