"""Measures the memory of an embedding table and its optimizer's slots.

For docs/scaling.md. Each configuration (rows V, width D, optimizer) runs in a
fresh child process, which reports from TensorFlow's CPU allocator counts
(`tf.config.experimental.get_memory_info`, peak reset between phases), with
the process's resident set size (`VmRSS`, `VmHWM`) beside:

- the table: `keras_embed.Embedding(V, D).build()`, held and peak;
- the optimizer's slots: `optimizer.build([table])`, held and peak;
- one training step on a batch of 256 x 20 ids (a sparse gradient): the peak
  above what is held, i.e. the step's temporaries.

Configurations are run smallest first; before each, the peak it will need is
predicted from the smaller runs' measured ratios, and it is skipped (and its
figures computed from the measured bytes per row instead) when that exceeds
`--max-gib` or what the machine has available less a margin. The children
mark themselves first in line for the kernel's OOM killer.

Then it computes, for N devices, the per-device memory and per-step
communication of replicated and row-sharded tables (see docs/scaling.md for
the formulas), and prints markdown tables.

    python benchmarks/scaling_memory.py --json scaling_memory.json
"""

import argparse
import json
import os
import subprocess
import sys
import time

# Before TensorFlow loads (here, in the child, and in main's imports).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROWS = (1_000_000, 10_000_000, 100_000_000)
DIMS = (64, 128)
OPTIMIZERS = ("sgd", "lazy_adam", "adam")
SLOTS = {"sgd": 0, "lazy_adam": 2, "adam": 2}
BATCH, LENGTH = 256, 20
GIB = 2**30


def _status_bytes(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure_one(rows, dim, optimizer_name):
    """Runs in the child: returns the measured bytes of each phase.

    "Allocated" is TensorFlow's CPU allocator's count of bytes in use
    (`tf.config.experimental.get_memory_info`), what a GPU would have to hold
    too; the process's resident set (RSS) can be lower, for zero-filled pages
    not yet written, or higher, for freed memory the allocator keeps.
    """
    with open("/proc/self/oom_score_adj", "w") as oom:
        oom.write("1000")
    import keras
    import tensorflow as tf

    import keras_embed

    def allocated():
        return tf.config.experimental.get_memory_info("CPU:0")

    def reset_peak():
        tf.config.experimental.reset_memory_stats("CPU:0")

    tf.reduce_sum(tf.ones((8, 8)))  # TensorFlow's own start-up allocations
    if optimizer_name == "sgd":
        optimizer = keras.optimizers.SGD(0.1)
    elif optimizer_name == "adam":
        optimizer = keras.optimizers.Adam(0.001)
    else:
        from keras_embed.optimizers import LazyAdam

        optimizer = LazyAdam(0.001)
    result = {"rows": rows, "dim": dim, "optimizer": optimizer_name}

    base = allocated()["current"]
    rss_base = _status_bytes("VmRSS")
    reset_peak()
    start = time.perf_counter()
    layer = keras_embed.Embedding(rows, dim)
    layer.build()
    result["table_build_seconds"] = time.perf_counter() - start
    held = allocated()["current"]
    result["table_bytes"] = held - base
    result["table_peak_bytes"] = allocated()["peak"] - base

    reset_peak()
    optimizer.build([layer.embeddings])
    after_slots = allocated()["current"]
    result["slot_bytes"] = after_slots - held
    result["slot_peak_bytes"] = allocated()["peak"] - held

    ids = tf.random.stateless_uniform(
        (BATCH, LENGTH), seed=(1, 2), maxval=rows, dtype=tf.int32
    )
    weights = tf.random.stateless_normal((BATCH, LENGTH, dim), seed=(3, 4))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(ids) * weights)
        gradients = tape.gradient(loss, [layer.embeddings])
        optimizer.apply_gradients(zip(gradients, [layer.embeddings]))

    step()  # traces; the second step is the one measured
    before = allocated()["current"]
    reset_peak()
    start = time.perf_counter()
    step()
    result["step_seconds"] = time.perf_counter() - start
    result["step_peak_bytes"] = allocated()["peak"] - before
    result["held_after_step_bytes"] = allocated()["current"] - base
    result["process_rss_bytes"] = _status_bytes("VmRSS") - rss_base
    result["process_peak_rss_bytes"] = _status_bytes("VmHWM") - rss_base
    return result


def _predicted_peak(measured, rows, dim, optimizer_name):
    """The peak a run will reach, scaled from the largest measured run of the
    same optimizer (None if there is none yet)."""
    same = [m for m in measured if m["optimizer"] == optimizer_name]
    if not same:
        return None
    reference = max(same, key=lambda m: m["rows"] * m["dim"])
    scale = rows * dim / (reference["rows"] * reference["dim"])
    phases = (
        reference["table_peak_bytes"],
        reference["table_bytes"] + reference["slot_peak_bytes"],
        reference["table_bytes"] + reference["slot_bytes"]
        + reference["step_peak_bytes"],
    )
    return max(phases) * scale


def run_child(rows, dim, optimizer_name, timeout):
    command = [
        sys.executable, os.path.abspath(__file__), "--child",
        str(rows), str(dim), optimizer_name,
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    if completed.returncode != 0:
        return {"error": completed.stderr[-2000:] or f"exit {completed.returncode}"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def per_device(rows, dim, slots, devices, lookups, index_bytes=4):
    """Bytes a device holds and receives per step, replicated vs sharded.

    `lookups` is the global batch's number of ids. Replicated: every device
    holds the table and slots; the sparse gradient is all-gathered, so each
    device receives the other devices' (index, row) pairs. Row-sharded: each
    device holds V/N rows; each device's ids go to the devices owning them
    and the rows come back (forward), the row gradients go back (backward).
    """
    row_bytes = 4 * dim * (1 + slots)
    share = (devices - 1) / devices
    return {
        "replicated_memory": rows * row_bytes,
        "sharded_memory": rows * row_bytes / devices,
        "replicated_sparse_receive": share * lookups * (4 * dim + index_bytes),
        "replicated_dense_receive": 2 * share * rows * 4 * dim,
        "sharded_receive": share * (lookups / devices)
        * (2 * 4 * dim + index_bytes),
    }


def _gib(value):
    return f"{value / GIB:.2f}"


def _mib(value):
    return f"{value / 2**20:.1f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument(
        "--max-gib", type=float, default=16.0,
        help="skip a run predicted to peak above this (GiB); default 16",
    )
    parser.add_argument(
        "--margin-gib", type=float, default=5.0,
        help="leave this much of MemAvailable to others (GiB); default 5",
    )
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument(
        "--devices", type=int, nargs="+", default=[1, 2, 8, 32],
    )
    parser.add_argument(
        "--global-lookups", type=int, default=8192 * 20,
        help="ids in one global batch, for the communication table",
    )
    args = parser.parse_args()
    if args.child:
        rows, dim, name = args.child
        print(json.dumps(measure_one(int(rows), int(dim), name)))
        return
    # Imported here: the child imports TensorFlow only once it has marked
    # itself for the OOM killer.
    from keras_embed.utils.memory import available_memory_bytes, physical_memory_bytes

    measured, skipped = [], []
    configurations = sorted(
        ((v, d, o) for v in ROWS for d in DIMS for o in OPTIMIZERS),
        key=lambda c: (c[0] * c[1], OPTIMIZERS.index(c[2])),
    )
    for rows, dim, name in configurations:
        predicted = _predicted_peak(measured, rows, dim, name)
        limit = args.max_gib * GIB
        available = available_memory_bytes()
        if available is not None:
            limit = min(limit, available - args.margin_gib * GIB)
        label = f"V={rows:,} D={dim} {name}"
        if predicted is None and rows > ROWS[0]:
            predicted = float("inf")
        if predicted is not None and predicted > limit:
            print(
                f"skip    {label}: predicted peak {_gib(predicted)} GiB > "
                f"limit {_gib(limit)} GiB", flush=True,
            )
            skipped.append({"rows": rows, "dim": dim, "optimizer": name,
                            "predicted_peak_bytes": predicted})
            continue
        print(f"measure {label} ...", end=" ", flush=True)
        result = run_child(rows, dim, name, args.timeout)
        if "error" in result:
            print("failed:", result["error"][-300:], flush=True)
            skipped.append({"rows": rows, "dim": dim, "optimizer": name,
                            "error": result["error"][-300:]})
            continue
        measured.append(result)
        print(
            f"table {_gib(result['table_bytes'])} GiB, slots "
            f"{_gib(result['slot_bytes'])} GiB, step peak +"
            f"{_gib(result['step_peak_bytes'])} GiB "
            f"({result['step_seconds']:.2f} s)", flush=True,
        )

    print("\n## Measured (bytes per row = held / V)\n")
    print("| V | D | optimizer | table GiB | table B/row | build peak GiB "
          "| slots GiB | slots B/row | step temporaries GiB | step s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for m in measured:
        print(
            f"| {m['rows']:,} | {m['dim']} | {m['optimizer']} "
            f"| {_gib(m['table_bytes'])} | {m['table_bytes'] / m['rows']:.1f} "
            f"| {_gib(m['table_peak_bytes'])} | {_gib(m['slot_bytes'])} "
            f"| {m['slot_bytes'] / m['rows']:.1f} "
            f"| {_gib(m['step_peak_bytes'])} | {m['step_seconds']:.2f} |"
        )
    for s in skipped:
        print(f"not measured: V={s['rows']:,} D={s['dim']} {s['optimizer']}")

    slots = SLOTS["lazy_adam"]  # and Adam's
    print(f"\n## Per device, N devices, {args.global_lookups:,} ids a global "
          f"batch, table + {slots} slots (Adam, LazyAdam)\n")
    print("| V | D | N | replicated GiB | sharded GiB | replicated, sparse "
          "all-gather MiB | replicated, dense all-reduce MiB | sharded "
          "all-to-all MiB |")
    print("|---|---|---|---|---|---|---|---|")
    communication = []
    for rows in ROWS:
        for dim in DIMS:
            for devices in args.devices:
                figures = per_device(
                    rows, dim, slots, devices, args.global_lookups
                )
                communication.append(
                    {"rows": rows, "dim": dim, "devices": devices, **figures}
                )
                print(
                    f"| {rows:,} | {dim} | {devices} "
                    f"| {_gib(figures['replicated_memory'])} "
                    f"| {_gib(figures['sharded_memory'])} "
                    f"| {_mib(figures['replicated_sparse_receive'])} "
                    f"| {_mib(figures['replicated_dense_receive'])} "
                    f"| {_mib(figures['sharded_receive'])} |"
                )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {"measured": measured, "not_measured": skipped,
                 "per_device": communication,
                 "global_lookups": args.global_lookups,
                 "machine": {"cpus": os.cpu_count(),
                             "memory_bytes": physical_memory_bytes()}},
                out, indent=1,
            )
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
