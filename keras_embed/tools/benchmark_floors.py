"""The project's floors, judged on the results of one benchmark run: each
with its measured value and whether it is met.

`benchmarks/run.py --check` prints them and exits non-zero when one is
missed; `keras-embed bench`, a user's tool, prints results only.
"""

from keras_embed.tools import benchmark_optimizers
from keras_embed.tools import dynamic_benchmark
from keras_embed.tools.benchmark_report import RAW_GATHER_FLOOR


def floors(results):
    """The issue's floors, each with its measured value and whether it is met."""
    checks = []
    for lookup in results["lookup"]:
        shape = f"V={lookup['rows']:,} D={lookup['width']}"
        checks.append({"floor": f"lookup {shape}: ours >= {RAW_GATHER_FLOOR:.2f}x raw tf.gather",
                       "value": lookup["ours_vs_raw"],
                       "met": lookup["ours_vs_raw"] >= RAW_GATHER_FLOOR})
        checks.append({"floor": f"lookup {shape}: ours >= stock (1.00x)",
                       "value": lookup["ours_vs_stock"], "met": lookup["ours_vs_stock"] >= 1.0})
    training = {t["rows"]: t for t in results["training"]}
    if 1_000_000 in training:
        at_1m = training[1_000_000]
        speedup = at_1m["lazy_speedup_vs_stock_adam"]
        checks.append({"floor": "train V=1M: ours + LazyAdam >= 5x faster than stock + Adam",
                       "value": speedup, "met": speedup >= 5})
        peaks = at_1m["peak_bytes"]
        ratio = peaks["ours + LazyAdam"] / peaks["stock + Adam"]
        checks.append({"floor": "train V=1M: peak memory of ours + LazyAdam <= stock + Adam",
                       "value": ratio, "met": ratio <= 1})
        if 100_000 in training:
            growth = (at_1m["median_s"]["ours + LazyAdam"]
                      / training[100_000]["median_s"]["ours + LazyAdam"])
            checks.append({"floor": "train: ours + LazyAdam at V=1M <= 1.5x its time at V=100K",
                           "value": growth, "met": growth <= 1.5})
    for bags in results.get("bags", []):
        if (bags["batch"], bags["length"], bags["width"], bags["rows"],
                bags["padding"]) != (256, 200, 64, 1_000_000, 0.0):
            continue
        checks.append({"floor": "bags B=256 L=200 D=64 V=1M: EmbeddingBag >= 2x faster than "
                                "Embedding(mask_zero) -> GlobalAveragePooling1D",
                       "value": bags["bag_vs_pooling"], "met": bags["bag_vs_pooling"] >= 2})
        checks.append({"floor": "bags B=256 L=200 D=64 V=1M: EmbeddingBag >= 0.9x "
                                "reduce_mean(gather)",
                       "value": bags["bag_vs_reduce_mean"],
                       "met": bags["bag_vs_reduce_mean"] >= 0.9})
    if results.get("optimizers"):
        checks += benchmark_optimizers.floors(
            results["optimizers"], results["bandwidth"]["copy_gb_per_s"]
        )
    checks += dynamic_benchmark.floors(results.get("dynamic", []))
    return checks
