"""Keras's `jit_compile="auto"` leaves a model holding our layer uncompiled.

Under XLA the id check cannot raise (TensorFlow compiles `Assert` to
nothing): bad ids get NaN rows instead (see `ids`). Keras compiles with XLA
by default (`jit_compile="auto"`) wherever a GPU is present, asking each
layer through its `supports_jit` attribute. Our layer answers False while
Keras resolves "auto", so the model runs as a graph with the check in it,
and a bad id raises before any update, on every device. Asked at any other
time (an explicit `compile(jit_compile=True)`, which Keras also checks
against `supports_jit`), it answers True: XLA is then the user's choice, and
it works, with NaN rows for bad ids.

Keras has no public hook for how "auto" is resolved: `install` wraps
`keras.src.trainers.trainer.Trainer._resolve_auto_jit_compile` (private) to
know when it runs. If a future Keras moves it, `install` leaves Keras as it
is and `supports_jit` answers False always: "auto" still picks no XLA, and
an explicit `jit_compile=True` gets Keras's "Model doesn't support
`jit_compile=True`" warning and runs without XLA (the safe side).

Example:

>>> import keras, keras_embed
>>> model = keras.Sequential([keras_embed.Embedding(10, 2)])
>>> model.compile("sgd", "mse")  # "auto": never XLA with our layer
>>> model.jit_compile
False
"""

import contextvars

_RESOLVING_AUTO = contextvars.ContextVar("keras_embed_resolving_auto", default=False)
_installed = False


def supports_jit():
    """What our layer answers Keras's `supports_jit` now: False while Keras
    resolves `jit_compile="auto"` (or always, if `install` could not wrap
    it), True otherwise."""
    return _installed and not _RESOLVING_AUTO.get()


def install():
    """Wraps Keras's resolution of `jit_compile="auto"`; safe to call twice."""
    global _installed
    try:
        from keras.src.trainers import trainer

        stock = trainer.Trainer._resolve_auto_jit_compile
    except (ImportError, AttributeError):
        return
    if getattr(stock, "_keras_embed_auto_jit", False):
        _installed = True
        return

    def resolve_auto_jit_compile(self):
        token = _RESOLVING_AUTO.set(True)
        try:
            return stock(self)
        finally:
            _RESOLVING_AUTO.reset(token)

    resolve_auto_jit_compile._keras_embed_auto_jit = True
    resolve_auto_jit_compile.__wrapped__ = stock
    resolve_auto_jit_compile.__doc__ = stock.__doc__
    trainer.Trainer._resolve_auto_jit_compile = resolve_auto_jit_compile
    _installed = True
