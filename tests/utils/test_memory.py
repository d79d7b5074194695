"""Memory this process can still get: the machine's `MemAvailable`, less
where a cgroup (a container's limit) allows less; and the table-size check
refusing what it cannot get."""

import keras_embed
import pytest

from keras_embed.layers.errors import InvalidConfigError
from keras_embed.utils import memory


def test_available_memory_is_read_from_the_system():
    available = memory.available_memory_bytes()
    assert available is not None and 10**8 < available < 10**14


def _memory_files(tmp_path, monkeypatch, meminfo_kb, v2=None, v1=None):
    """Points config_checks at fake /proc/meminfo and cgroup folders.

    `v2` / `v1`: dicts of file name to contents, or None for no such folder.
    """
    (tmp_path / "meminfo").write_text(f"MemTotal: 99999999 kB\nMemAvailable: {meminfo_kb} kB\n")
    monkeypatch.setattr(memory, "_MEMINFO", str(tmp_path / "meminfo"))
    folders = []
    for name, files, limit, usage, cache in (
        ("v2", v2, "memory.max", "memory.current", "inactive_file"),
        ("v1", v1, "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
    ):
        folder = tmp_path / name
        folder.mkdir()
        for file_name, text in (files or {}).items():
            (folder / file_name).write_text(text)
        folders.append((str(folder), limit, usage, cache))
    monkeypatch.setattr(memory, "_CGROUP_FILES", tuple(folders))


def test_available_memory_without_cgroup_files_is_memavailable(tmp_path, monkeypatch):
    _memory_files(tmp_path, monkeypatch, 3_000_000)
    assert memory.available_memory_bytes() == 3_000_000 * 1024


def test_a_cgroup_v2_limit_below_memavailable_wins(tmp_path, monkeypatch):
    _memory_files(tmp_path, monkeypatch, 30_000_000, v2={
        "memory.max": "4000000000\n", "memory.current": "1500000000\n",
        "memory.stat": "anon 1000000000\nfile 500000000\ninactive_file 300000000\n",
    })
    # 4.0 GB limit, 1.5 GB used of which 0.3 GB is cache the kernel drops first.
    assert memory.available_memory_bytes() == 4_000_000_000 - 1_200_000_000


def test_cgroup_v2_max_means_no_limit(tmp_path, monkeypatch):
    _memory_files(tmp_path, monkeypatch, 3_000_000, v2={"memory.max": "max\n", "memory.current": "123\n"})
    assert memory.available_memory_bytes() == 3_000_000 * 1024


def test_a_cgroup_v1_limit_below_memavailable_wins(tmp_path, monkeypatch):
    _memory_files(tmp_path, monkeypatch, 30_000_000, v1={
        "memory.limit_in_bytes": "2000000000\n", "memory.usage_in_bytes": "500000000\n",
    })  # No memory.stat: all usage counts.
    assert memory.available_memory_bytes() == 1_500_000_000


def test_a_cgroup_limit_above_memavailable_changes_nothing(tmp_path, monkeypatch):
    # cgroup v1 writes "no limit" as a huge number.
    _memory_files(tmp_path, monkeypatch, 3_000_000, v1={
        "memory.limit_in_bytes": "9223372036854771712\n", "memory.usage_in_bytes": "5000\n",
    })
    assert memory.available_memory_bytes() == 3_000_000 * 1024


def test_a_full_cgroup_refuses_a_table_memavailable_would_take(tmp_path, monkeypatch):
    _memory_files(tmp_path, monkeypatch, 30_000_000, v2={
        "memory.max": "2000000000", "memory.current": "1000000000",
    })
    with pytest.raises(InvalidConfigError, match=r"needs 2\.0 GB, more than the 1\.0 GB of memory available"):
        keras_embed.Embedding(1_000_000, 512, name="t")
