"""Checks on the layer's arguments and saved tables, with errors that name
the layer and the field.

A config read from a file is data from outside: `Embedding.from_config`
evaluates none of it, and each check here refuses a value of the wrong kind
before anything is built. A table too large for this machine's memory is
refused before it is allocated, so the process survives to read the error.

Example:

>>> try:
...     check_size("words", "input_dim", "10")
... except InvalidConfigError as error:
...     print(error)
Embedding layer 'words': `input_dim` must be a positive integer. Received: input_dim='10' (of type str).
"""

import numbers
import os

import numpy as np

# Tables smaller than this are not compared with the memory available.
_SMALL_TABLE_BYTES = 2**30

# Where memory is read: the machine's, then the cgroup's (a container's
# limit): (folder, limit, usage, `memory.stat` field of droppable cache) for
# cgroup v2, then v1.
_MEMINFO = "/proc/meminfo"
_CGROUP_FILES = (
    ("/sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),
    ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes",
     "total_inactive_file"),
)

# Bytes per value of a table stored quantized, by quantization mode.
_QUANTIZED_BYTES = {"int8": 1.0, "float8": 1.0, "int4": 0.5}


class InvalidConfigError(ValueError, TypeError):
    """An argument or config field of the wrong kind or size; the message
    names the layer and the field.

    A `ValueError`, as stock's constructor raises, and a `TypeError`, as
    stock's `from_config` raises for the same fields.
    """


def check_size(layer_name, field, value):
    """Checks `input_dim` or `output_dim` as stock Keras does: a positive
    `int`, not a bool."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidConfigError(
            f"Embedding layer '{layer_name}': `{field}` must be a positive "
            f"integer. Received: {field}={value!r} (of type "
            f"{type(value).__name__})."
        )


def check_mask_zero(layer_name, value):
    """Returns `mask_zero` as a bool; anything but a bool is an error.

    A config saying `"mask_zero": "false"` would otherwise mask, the string
    being truthy.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise InvalidConfigError(
        f"Embedding layer '{layer_name}': `mask_zero` must be True or False. "
        f"Received: mask_zero={value!r} (of type {type(value).__name__})."
    )


def check_batch_shape(layer_name, field, shape, with_batch):
    """Checks Keras 2's `batch_input_shape` / `input_shape`: a list or tuple
    of positive integers and None."""
    entries = tuple(shape) if isinstance(shape, (list, tuple)) else None
    if entries and all(
        entry is None
        or (isinstance(entry, numbers.Integral) and not isinstance(entry, bool)
            and entry > 0)
        for entry in entries
    ):
        return tuple(None if entry is None else int(entry) for entry in entries)
    batch = "the batch dim, then " if with_batch else ""
    raise InvalidConfigError(
        f"Embedding layer '{layer_name}': `{field}` must be a list or tuple of "
        f"{batch}positive integers or None, one per input axis. Received: "
        f"{field}={shape!r}."
    )


def check_weights(layer_name, weights, input_dim, output_dim):
    """Returns the `weights` argument as a float array of shape
    `(input_dim, output_dim)`; the error gives the expected shape."""
    if isinstance(weights, (list, tuple)) and len(weights) == 1:
        weights = weights[0]
    expected = (input_dim, output_dim)
    try:
        array = np.asarray(weights)
    except ValueError:  # Ragged nested lists.
        array = None
    if array is None or array.shape != expected:
        shape = "a ragged list" if array is None else f"shape {array.shape}"
        raise InvalidConfigError(
            f"Embedding layer '{layer_name}': `weights` must have shape "
            f"(input_dim, output_dim) = {expected}. Received: weights of "
            f"{shape}."
        )
    if array.dtype.kind not in "iuf":
        raise InvalidConfigError(
            f"Embedding layer '{layer_name}': `weights` must hold numbers. "
            f"Received: weights of dtype {array.dtype}."
        )
    return array


def check_lora_rank(layer_name, value):
    """Returns `lora_rank` as an int or None; else an error.

    A positive integer enables LoRA at build; `None` or 0 (as stock) leave it
    off.
    """
    if value is None:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0:
        return int(value)
    raise InvalidConfigError(
        f"Embedding layer '{layer_name}': `lora_rank` must be a positive "
        f"integer or None. Received: lora_rank={value!r} (of type "
        f"{type(value).__name__})."
    )


def check_lora_alpha(layer_name, value):
    """Returns `lora_alpha` (an int or float) or None; else an error.

    Stock takes any number, and scales the LoRA delta by
    `lora_alpha / lora_rank`.
    """
    if value is None:
        return None
    if (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and np.isfinite(value)
        and value > 0
    ):
        return int(value) if isinstance(value, numbers.Integral) else float(value)
    raise InvalidConfigError(
        f"Embedding layer '{layer_name}': `lora_alpha` must be a positive "
        f"number or None. Received: lora_alpha={value!r} (of type "
        f"{type(value).__name__})."
    )


def table_bytes(input_dim, output_dim, dtype_policy, lora_rank=None):
    """Bytes the table takes as the layer's dtype policy stores it, plus its
    float32 LoRA matrices `(input_dim, lora_rank)` and
    `(lora_rank, output_dim)` if `lora_rank` is set."""
    mode = dtype_policy.quantization_mode
    if mode in _QUANTIZED_BYTES:
        per_value = _QUANTIZED_BYTES[mode]
    else:
        per_value = np.dtype(dtype_policy.variable_dtype).itemsize
    size = input_dim * output_dim * per_value
    if lora_rank:
        size += (input_dim + output_dim) * lora_rank * 4
    return size


def available_memory_bytes():
    """Memory this process can still get, in bytes, or None if unknown.

    The less of what the machine can still give (Linux's `MemAvailable`:
    free memory plus caches it can drop; else the free physical pages) and
    what the process's cgroup still allows (a container's memory limit).
    """
    known = [
        left for left in (_machine_memory_left(), _cgroup_memory_left())
        if left is not None
    ]
    return min(known) if known else None


def _machine_memory_left():
    try:
        with open(_MEMINFO) as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_memory_left():
    """The cgroup's memory limit less its usage, or None (no limit, or no
    cgroup files to read).

    cgroup v2 (`memory.max`, "max" for no limit, less `memory.current`),
    else v1 (`memory.limit_in_bytes` less `memory.usage_in_bytes`). Usage
    counts page cache; its inactive part, which the kernel drops before it
    refuses memory, is not counted (as `docker stats` does).
    """
    for root, limit_file, usage_file, cache_field in _CGROUP_FILES:
        try:
            with open(os.path.join(root, limit_file)) as file:
                limit = file.read().strip()
            with open(os.path.join(root, usage_file)) as file:
                usage = int(file.read())
            if limit == "max":
                return None
            limit = int(limit)
        except (OSError, ValueError):
            continue
        usage -= min(_cgroup_stat(root, cache_field), usage)
        return max(limit - usage, 0)
    return None


def _cgroup_stat(root, field):
    """A field of the cgroup's `memory.stat`, in bytes; 0 if unreadable."""
    try:
        with open(os.path.join(root, "memory.stat")) as stat:
            for line in stat:
                name, _, value = line.partition(" ")
                if name == field:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def check_table_fits(layer_name, input_dim, output_dim, dtype_policy, lora_rank=None):
    """Refuses a table larger than the memory available, before allocating.

    Allocating it would fail deep in TensorFlow, or, where the system
    overcommits memory, get the process killed. Tables under 1 GiB are not
    checked.
    """
    size = table_bytes(input_dim, output_dim, dtype_policy, lora_rank)
    if size < _SMALL_TABLE_BYTES:
        return
    available = available_memory_bytes()
    if available is None or size <= available:
        return
    mode = dtype_policy.quantization_mode
    values = f"{mode} values" if mode else f"{dtype_policy.variable_dtype} values"
    with_lora = size != table_bytes(input_dim, output_dim, dtype_policy)
    lora = f", with float32 LoRA matrices of rank {lora_rank}," if with_lora else ""
    raise InvalidConfigError(
        f"Embedding layer '{layer_name}': a table of (input_dim, output_dim) "
        f"= ({input_dim}, {output_dim}) {values}{lora} needs "
        f"{_gigabytes(size)}, more than the {_gigabytes(available)} of memory "
        f"available. Use a smaller input_dim{', lora_rank' if with_lora else ''} "
        "or output_dim (e.g. hash ids into fewer buckets), or a machine with "
        "more memory."
    )


def check_saved_shapes(layer, variables, store):
    """Checks the file has one array per variable of the layer, each of the
    variable's shape.

    Called by `Embedding.load_own_variables` before assigning: the shapes
    come from the layer's config, the arrays from the file.

    Args:
        layer: the `Embedding` loading, named in the error.
        variables: its variables, in the order they were saved.
        store: the saved arrays, keyed "0", "1", ...
    """
    if len(store.keys()) != len(variables):
        raise InvalidConfigError(
            f"Embedding layer '{layer.name}' expects {len(variables)} "
            f"saved variables ({', '.join(v.name for v in variables)}; "
            f"quantization mode {layer.quantization_mode}), but the file "
            f"lists {len(store.keys())}."
        )
    for index, variable in enumerate(variables):
        saved = tuple(store[str(index)].shape)
        expected = tuple(variable.shape)
        if saved != expected:
            raise InvalidConfigError(
                f"Embedding layer '{layer.name}': the file's "
                f"`{variable.name}` has shape {saved}, but the layer's config "
                f"(input_dim={layer.input_dim}, output_dim={layer.output_dim}) "
                f"makes it {expected}. The config and the weights in this "
                "file do not belong together."
            )


def _gigabytes(size):
    return f"{size / 1e9:,.1f} GB"
