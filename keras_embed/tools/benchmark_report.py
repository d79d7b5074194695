"""Reports of `keras_embed.tools.benchmark`'s results: Markdown tables and a plot."""

import numpy as np

GIB = 2**30
# The floor on ours / raw `tf.gather` lookup throughput.
RAW_GATHER_FLOOR = 0.95


def format_tables(results):
    """The results as Markdown tables."""
    machine_line = results["machine"]
    settings = results["settings"]
    trainings = _training_names(results)
    lines = [
        f"Machine: {machine_line['cpu']}, {machine_line['cores']} cores, "
        f"{machine_line['memory_gib']:.0f} GiB; TensorFlow {machine_line['tensorflow']}, "
        f"Keras {machine_line['keras']}. Memory copy: "
        f"{results['bandwidth']['copy_gb_per_s']:.1f} GB/s (read + write).",
        "",
        f"Forward lookup, B={settings['batch']} x L={settings['length']} ids, median ms per call:",
        "",
        "| V | D | ours | stock | raw tf.gather | ours vs raw | ours vs stock | share of copy bandwidth |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["lookup"]:
        s = r["median_s"]
        lines.append(
            f"| {r['rows']:,} | {r['width']} | {s['ours'] * 1e3:.2f} | {s['stock'] * 1e3:.2f} "
            f"| {s['raw tf.gather'] * 1e3:.2f} | {r['ours_vs_raw']:.2f}x | {r['ours_vs_stock']:.2f}x "
            f"| {r['share_of_copy_bandwidth']:.0%} |")
    lines += [
        "",
        f"Training step (train_on_batch), D={settings['train_width']}, median ms; "
        "peak memory GiB (held + step):",
        "",
        "| V | " + " | ".join(trainings) + " | LazyAdam speed-up | "
        + " | ".join(f"peak {name}" for name in trainings) + " |",
        "|---:|" + "---:|" * (2 * len(trainings) + 1),
    ]
    for r in results["training"]:
        times = " | ".join(f"{r['median_s'][name] * 1e3:.1f}" for name in trainings)
        peaks = " | ".join(f"{r['peak_bytes'][name] / GIB:.2f}" for name in trainings)
        lines.append(f"| {r['rows']:,} | {times} | {r['lazy_speedup_vs_stock_adam']:.1f}x | {peaks} |")
    lines += _bag_tables(results.get("bags", []))
    if any(r["share_of_copy_bandwidth"] > 1 for r in results["lookup"]):
        lines.insert(_after_lookup_table(lines), "\nA share above 100%: the lookup's table and output "
                     "fit in the CPU's cache, faster than the main memory the copy is measured in.")
    return "\n".join(lines)


def _after_lookup_table(lines):
    """The index of the line after the lookup table's last row."""
    start = next(i for i, line in enumerate(lines) if line.startswith("| V | D |"))
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return end


def format_floors(checks):
    """The project's floors (`benchmark.floors`) as a Markdown list."""
    lines = ["Floors:", ""]
    for check in checks:
        lines.append(f"- {'met' if check['met'] else 'NOT MET'}: {check['floor']} "
                     f"(measured {check['value']:.3f})")
    return "\n".join(lines)


def _bag_tables(bags):
    """Time and peak memory of each way to reduce bags, one row per shape."""
    if not bags:
        return []
    names = list(bags[0]["median_s"])
    shape = "| B | L | D | V | padding | "
    rule = "|---:|---:|---:|---:|---:|" + "---:|" * len(names)
    lines = [
        "",
        "Bags of ids (combiner mean), forward + backward to the table, median ms:",
        "",
        shape + " | ".join(names) + " | ours vs pooling | ours vs reduce_mean "
        "| bound vs pooling |",
        rule + "---:|---:|---:|",
    ]
    for r in bags:
        sizes = (f"| {r['batch']:,} | {r['length']} | {r['width']} | {r['rows']:,} "
                 f"| {r['padding']:.0%} | ")
        lines.append(sizes + " | ".join(f"{r['median_s'][n] * 1e3:.1f}" for n in names)
                     + f" | {r['bag_vs_pooling']:.2f}x | {r['bag_vs_reduce_mean']:.2f}x "
                     f"| {r['bound_vs_pooling']:.2f}x |")
    names = list(bags[0]["peak_bytes"])
    rule = "|---:|---:|---:|---:|---:|" + "---:|" * len(names)
    lines += [
        "",
        "Bags: peak memory of one forward + backward call, MiB above what was "
        "allocated before it (a (B, L, D) float32 tensor: last column):",
        "",
        shape + " | ".join(names) + " | (B, L, D) |",
        rule + "---:|",
    ]
    for r in bags:
        sizes = (f"| {r['batch']:,} | {r['length']} | {r['width']} | {r['rows']:,} "
                 f"| {r['padding']:.0%} | ")
        lines.append(sizes + " | ".join(f"{r['peak_bytes'][n] / 2**20:.0f}" for n in names)
                     + f" | {r['bld_bytes'] / 2**20:.0f} |")
    return lines


def plot(results, path):
    """Writes a PNG: lookup ratios, training step times, peak memory."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    settings = results["settings"]
    trainings = _training_names(results)
    figure, (left, middle, right) = pyplot.subplots(1, 3, figsize=(15, 4.2))
    labels = [f"V={_count(r['rows'])}\nD={r['width']}" for r in results["lookup"]]
    positions = np.arange(len(labels))
    for offset, (key, label) in zip((-0.2, 0.2), (("ours_vs_raw", "ours / raw tf.gather"),
                                                  ("ours_vs_stock", "ours / stock"))):
        left.bar(positions + offset, [r[key] for r in results["lookup"]], 0.4, label=label)
    left.axhline(1.0, color="black", linestyle=":", linewidth=1,
                 label="1.0: as fast")
    left.set_xticks(positions, labels, fontsize=7)
    left.set_ylabel("throughput ratio (higher: ours faster)")
    left.set_title(f"Forward lookup, B={settings['batch']} x L={settings['length']}")
    left.set_ylim(0, 1.35 * max(max(r["ours_vs_raw"], r["ours_vs_stock"])
                                for r in results["lookup"]))
    left.legend(fontsize=7, loc="upper center", ncol=3)
    rows = [r["rows"] for r in results["training"]]
    for name in trainings:
        middle.plot(rows, [r["median_s"][name] * 1e3 for r in results["training"]],
                    marker="o", label=name)
        right.plot(rows, [r["peak_bytes"][name] / GIB for r in results["training"]],
                   marker="o", label=name)
    for axes, ylabel, title in (
        (middle, "ms per step (median)", f"Training step, D={settings['train_width']}"),
        (right, "GiB (held + step peak)", "Peak memory of training"),
    ):
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("rows V")
        axes.set_ylabel(ylabel)
        axes.set_title(title)
        axes.legend(fontsize=7)
    m = results["machine"]
    figure.suptitle(f"keras_embed benchmark: {m['cpu']}, {m['cores']} cores", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    pyplot.close(figure)


def _training_names(results):
    """The training configurations measured, in their order."""
    return list(results["training"][0]["median_s"]) if results["training"] else []


def _count(number):
    """10000 -> "10K", 4000000 -> "4M"."""
    for size, suffix in ((10**6, "M"), (10**3, "K")):
        if number >= size and number % size == 0:
            return f"{number // size}{suffix}"
    return str(number)
