"""What a row of its own is worth: one small model trained online on a
drifting stream (`drifting_stream.py`) three ways, with the same rows.

    python benchmarks/dynamic_drift.py [--output docs/images/dynamic_embedding_drift.png]

The model: key -> a row of D = 1 + context values (a bias and a vector) ->
`bias + vector . x` -> Dense(1, sigmoid), binary cross-entropy,
`keras_embed.optimizers.LazyAdam`. The three ways to give keys rows, each
with `capacity` rows (C = 2,000 while the stream has 40,000 keys):

- `Hashing(C) -> keras_embed.Embedding(C, D)`: every key gets a row, shared
  with the other keys hashed to it;
- `IntegerLookup(max_tokens=C)` adapted on the stream's first stretch ->
  `keras_embed.Embedding(C, D)`: the C - 1 keys most seen then get a row of
  their own, every other key the one OOV row;
- `keras_embed.DynamicEmbedding(C, D)` (LRU; plus its one learned OOV row):
  the keys seen in training get rows of their own, the least recently seen
  giving theirs up.

Online, in stream order: the model trains on stretch i (one epoch, in order),
then its log loss is measured on stretch i + 1 before it trains on that
(held out: `evaluate`, where DynamicEmbedding only looks keys up; keys it
holds no row for get the OOV row). It prints the mean held-out loss per third
of the stream and the share of held-out examples whose key had a row of its
own, and draws the held-out loss per stretch, with the lowest loss any model
can reach (the labels' own entropy), in one PNG. About a minute on 2 cores.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from drifting_stream import DriftingStream  # noqa: E402
from drifting_stream import entropy  # noqa: E402

CAPACITY = 2_000
WAYS = ("Hashing -> Embedding", "IntegerLookup -> Embedding", "DynamicEmbedding (LRU)")
BATCH = 256
LEARNING_RATE = 0.05
DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                              "docs", "images", "dynamic_embedding_drift.png")


def build(way, stream, capacity, seed):
    """The model of `way`, compiled; and the layer giving keys rows."""
    import keras

    import keras_embed
    from keras_embed.optimizers import LazyAdam

    keras.utils.set_random_seed(seed)
    width = 1 + stream.context
    key = keras.Input((), dtype="int64", name="key")
    x = keras.Input((stream.context,), name="x")
    if way == WAYS[0]:
        rows = keras_embed.Embedding(capacity, width)(keras.layers.Hashing(capacity)(key))
        holder = None
    elif way == WAYS[1]:
        lookup = keras.layers.IntegerLookup(max_tokens=capacity)
        lookup.adapt(stream.stretch(0)["key"])
        rows = keras_embed.Embedding(lookup.vocabulary_size(), width)(lookup(key))
        holder = lookup
    else:
        holder = keras_embed.DynamicEmbedding(capacity, width, seed=seed)
        rows = holder(key)
    bias = rows[:, :1]
    dot = keras.layers.Dot(axes=1)([rows[:, 1:], x])
    output = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Concatenate()([bias, dot]))
    model = keras.Model({"key": key, "x": x}, output)
    model.compile(optimizer=LazyAdam(learning_rate=LEARNING_RATE), loss="binary_crossentropy")
    return model, holder


def own_row_share(way, holder, keys):
    """The share of `keys` with a row of their own (NaN for hashing, where
    every key shares its row with the keys hashed to it)."""
    if way == WAYS[0]:
        return float("nan")
    if way == WAYS[1]:
        return float(np.mean(np.asarray(holder(keys)) != 0))  # 0: the OOV index
    return float(np.mean(holder.lookup(keys) >= 0))


def run(stream, capacity=CAPACITY, seed=0, progress=print):
    """Trains each way online; returns per-stretch held-out losses etc."""
    import keras

    parts = [stream.stretch(i) for i in range(stream.stretches)]
    results = {"best": [entropy(part["probability"]) for part in parts[1:]]}
    for way in WAYS:
        started = time.perf_counter()
        model, holder = build(way, stream, capacity, seed)
        losses, shares = [], []
        for index, part in enumerate(parts):
            inputs = {"key": part["key"], "x": part["x"]}
            if index > 0:
                logs = model.evaluate(inputs, part["label"], batch_size=4096, verbose=0,
                                      return_dict=True)
                losses.append(float(logs["loss"]))
                shares.append(own_row_share(way, holder, part["key"]))
            model.fit(inputs, part["label"], batch_size=BATCH, epochs=1, shuffle=False,
                      verbose=0)
        results[way] = {"loss": losses, "own_row_share": shares,
                        "seconds": time.perf_counter() - started}
        progress(f"{way}: {results[way]['seconds']:.0f} s")
        del model, holder
        keras.backend.clear_session()
    return results


def thirds(values):
    """Means of the first, middle and last third of `values`."""
    return [float(np.mean(part)) for part in np.array_split(np.asarray(values), 3)]


def table(results, stream, capacity):
    lines = [
        f"Held-out log loss (mean per third of the stream; {stream.stretches - 1} stretches "
        f"of {stream.per_stretch:,} examples after the first), {stream.keys:,} keys, "
        f"{capacity:,} rows:",
        "",
        "| way | first third | middle third | last third | keys with a row of their own "
        "(last third) |",
        "|---|---:|---:|---:|---:|",
    ]
    for way in WAYS:
        first, middle, last = thirds(results[way]["loss"])
        share = thirds(results[way]["own_row_share"])[2]
        shown = "shared rows" if np.isnan(share) else f"{share:.0%}"
        lines.append(f"| {way} | {first:.4f} | {middle:.4f} | {last:.4f} | {shown} |")
    first, middle, last = thirds(results["best"])
    lines.append(f"| lowest possible (the labels' entropy) | {first:.4f} | {middle:.4f} "
                 f"| {last:.4f} | |")
    return "\n".join(lines)


def plot(results, stream, capacity, path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(8, 4.2))
    stretches = np.arange(1, stream.stretches)
    for way in WAYS:
        axes.plot(stretches, results[way]["loss"], marker="o", markersize=3, label=way)
    axes.plot(stretches, results["best"], color="black", linestyle=":",
              label="lowest possible (the labels' entropy)")
    axes.set_xlabel(f"stretch of the stream ({stream.per_stretch:,} examples each), "
                    "in time order")
    axes.set_ylabel("held-out log loss (before training on it)")
    axes.set_title(f"{stream.keys:,} drifting keys, {capacity:,} rows: a row of its own per key",
                   fontsize=10)
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=90)
    pyplot.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="the PNG (default: %(default)s)")
    arguments = parser.parse_args(argv)
    started = time.perf_counter()
    stream = DriftingStream()

    def progress(line):
        print(line, file=sys.stderr, flush=True)

    results = run(stream, progress=progress)
    print(table(results, stream, CAPACITY), flush=True)
    plot(results, stream, CAPACITY, arguments.output)
    progress(f"wrote {os.path.normpath(arguments.output)} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
