"""How the harness measures (`keras_embed.tools.measuring`), on a fake
clock and tiny buffers."""

import math

from keras_embed.tools import measuring


def test_interleaved_rotates_the_order_and_takes_medians(monkeypatch):
    """On a fake clock: each call of "a" takes 1, 2, 9, 3 s in its four rounds
    and "b" 5 s, so the medians per call are 2.5 s and 5 s."""
    clock = [0.0]
    monkeypatch.setattr(measuring.time, "perf_counter", lambda: clock[0])
    calls = []
    a_seconds = iter([1, 1, 2, 2, 9, 9, 3, 3])

    def a():
        calls.append("a")
        clock[0] += next(a_seconds)

    def b():
        calls.append("b")
        clock[0] += 5

    seconds = measuring.interleaved({"a": a, "b": b}, repeats=4, calls=2)
    assert calls == list("aabb" "bbaa" "aabb" "bbaa")
    assert seconds == {"a": 2.5, "b": 5.0}


def test_copy_bandwidth_counts_bytes_read_and_written():
    bandwidth = measuring.measure_copy_bandwidth(size=2**20, repeats=2)
    assert bandwidth["copy_gb_per_s"] == max(bandwidth["numpy_gb_per_s"],
                                             bandwidth["tensorflow_gb_per_s"]) > 0


def test_allocated_reads_the_peak_after_a_reset():
    import tensorflow as tf

    current, _ = measuring.allocated(reset=True)
    assert not math.isnan(current)  # tests/conftest.py chooses the BFC allocator, which keeps them
    held = tf.ones((1024, 256))  # 1 MiB
    _, peak = measuring.allocated()
    assert peak - current >= 2**20
    del held
