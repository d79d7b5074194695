"""How much memory this process can still get: the machine's and its
container's.

Used by the table-size check (`keras_embed.layers.config_checks`), which
refuses a table before allocating it, and by the benchmarks, which size
their tables to fit.

Example:

>>> from keras_embed.utils.memory import available_memory_bytes
>>> available = available_memory_bytes()
>>> available is None or available > 0
True
"""

import os

# Where memory is read: the machine's, then the cgroup's (a container's
# limit): (folder, limit, usage, `memory.stat` field of droppable cache) for
# cgroup v2, then v1.
_MEMINFO = "/proc/meminfo"
_CGROUP_FILES = (
    ("/sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),
    ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes",
     "total_inactive_file"),
)

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


def physical_memory_bytes():
    """The machine's physical memory in bytes, or None if unknown."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
