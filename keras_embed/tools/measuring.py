"""How the benchmark harness measures: timing in interleaved rounds, the
machine's memory-copy bandwidth, the CPU allocator's peak, the machine; and
what its sections share: the workload (`BATCH` x `LENGTH` ids,
`TRAIN_WIDTH`), the training model and the timing of its steps. The
harness's modules import downwards only: this one, then `bag_benchmark`,
`benchmark_optimizers`, `dynamic_benchmark`, `benchmark_report`,
`benchmark_floors`, and `benchmark` at the top.

Example:

>>> from keras_embed.tools.measuring import interleaved
>>> sorted(interleaved({"a": lambda: None, "b": lambda: None}, repeats=3))
['a', 'b']
"""

import gc
import os
import platform
import time
import warnings

import numpy as np

from keras_embed.utils.memory import physical_memory_bytes

GIB = 2**30
BATCH, LENGTH = 256, 200
TRAIN_WIDTH = 64


def interleaved(candidates, repeats, calls=1):
    """Median seconds per call of each candidate, timed in rotating rounds.

    Args:
        candidates: dict of name -> function of no arguments.
        repeats: rounds; each times every candidate once, `calls` calls each.
    """
    names = list(candidates)
    times = {name: [] for name in names}
    for round_number in range(repeats):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            function = candidates[name]
            start = time.perf_counter()
            for _ in range(calls):
                function()
            times[name].append((time.perf_counter() - start) / calls)
    return {name: float(np.median(values)) for name, values in times.items()}


def measure_copy_bandwidth(size=256 * 2**20, repeats=7):
    """Bytes moved per second (read + write) copying a buffer of `size` bytes,
    the best of NumPy's copy (one thread) and TensorFlow's (all threads)."""
    import tensorflow as tf

    source = np.ones(size // 4, "float32")
    target = np.empty_like(source)
    tensor = tf.constant(source)
    one = tf.Variable(1.0)  # a variable, so that no optimizer folds it away
    copy_tf = tf.function(lambda: (tensor * one)[:1], autograph=False)
    copy_tf()
    seconds = interleaved(
        {"numpy": lambda: np.copyto(target, source), "tensorflow": copy_tf}, repeats
    )
    rates = {name: 2 * size / value / 1e9 for name, value in seconds.items()}
    return {"copy_gb_per_s": max(rates.values()),
            "numpy_gb_per_s": rates["numpy"], "tensorflow_gb_per_s": rates["tensorflow"],
            "note": "bytes read plus bytes written per second"}


def allocated(reset=False):
    """(current, peak) bytes of TensorFlow's CPU allocator, the peak reset
    first if `reset`; NaNs where the allocator keeps no statistics.

    TensorFlow's default CPU allocator keeps none on some machines; its BFC
    allocator always does (`TF_CPU_ALLOCATOR_USE_BFC=true`, read when
    TensorFlow starts: `benchmarks/run.py` sets it).
    """
    import tensorflow as tf

    try:
        if reset:
            tf.config.experimental.reset_memory_stats("CPU:0")
        info = tf.config.experimental.get_memory_info("CPU:0")
    except ValueError:  # "Allocator stats not available for device 'CPU:0'"
        return float("nan"), float("nan")
    return info["current"], info["peak"]


def machine():
    """What the figures were measured on."""
    import keras
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            names = [line.split(":", 1)[1].strip() for line in file
                     if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    memory = physical_memory_bytes()
    return {"cpu": cpu, "cores": os.cpu_count(),
            "memory_gib": float("nan") if memory is None else memory / GIB,
            "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "platform": platform.platform()}


def training_model(layer, optimizer):
    """The training sections' model: `layer` (an embedding of `LENGTH` ids)
    -> GlobalAveragePooling1D -> Dense(1), compiled with `optimizer` and MSE."""
    import keras

    model = keras.Sequential([
        keras.Input((LENGTH,), dtype="int32"),
        layer,
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def time_training(makers, ids, targets, repeats, together):
    """Median seconds per `train_on_batch` of each model `makers` build, what
    each holds and the peak of its step above that (bytes).

    Args:
        makers: dict of name -> function of no arguments returning a
            compiled model.
        ids, targets: the one batch every step trains on.
        repeats: rounds of `interleaved`.
        together: whether all models are alive together and timed in
            interleaved rounds (else one after the other, each freed after).

    Returns:
        `(seconds, held, step_peak)`, three dicts keyed by name.
    """
    import keras

    models, held, step_peak = {}, {}, {}

    def build(name):
        model = makers[name]()
        for _ in range(2):  # builds the optimizer, traces, warms up
            model.train_on_batch(ids, targets)
        # What the configuration holds, counted exactly (the allocator's
        # running total also moves with one-time allocations of the process).
        held[name] = sum(
            int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
            for v in model.variables + model.optimizer.variables
        )
        gc.collect()
        current, _ = allocated(reset=True)
        model.train_on_batch(ids, targets)
        step_peak[name] = allocated()[1] - current
        return model

    def step(model):
        return lambda: model.train_on_batch(ids, targets)

    # Dense optimizers turn the table's gradient into a dense tensor, and
    # TensorFlow says so above 10**8 elements: that is what is being
    # measured, not news.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Converting sparse IndexedSlices")
        if together:
            models = {name: build(name) for name in makers}
            seconds = interleaved({n: step(m) for n, m in models.items()}, repeats)
        else:
            seconds = {}
            for name in makers:
                model = build(name)
                seconds.update(interleaved({name: step(model)}, repeats))
                del model
                gc.collect()
    del models
    gc.collect()
    keras.backend.clear_session()
    return seconds, held, step_peak
