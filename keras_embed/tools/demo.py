"""`keras-embed demo`: what an embedding layer does, on data in the package.

The demo turns two sentences into padded ids, shows the rows of the table
they select and the mask, trains a small text classifier on the labelled
sentences shipped in `keras_embed/data/sentences.csv`, saves it as `.keras`,
reloads it in a fresh Python process without `custom_objects` and checks the
predictions are identical, and draws the trained word vectors in 2-D
(`demo_plot`, a PNG; skipped without matplotlib).

Example:

>>> from keras_embed.tools import demo
>>> demo.run()          # doctest: +SKIP
0
"""

import csv
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "sentences.csv")
EXAMPLES = ("This is a text", "This is not a text")
UNSEEN = ("The food was great and the staff were lovely",
          "The film was dull and far too long")
SEED = 7
CLASSIFIER_WIDTH = 16
PICTURE = "demo_vectors.png"

# Runs in a fresh process: nothing but `import keras_embed` makes the layer
# known to Keras. With `python -P`: the current directory is not put first on
# `sys.path`, so a folder there named `keras_embed` (a clone of the project)
# cannot shadow the installed package.
RELOAD_SCRIPT = """\
import sys
import keras, numpy as np
import keras_embed  # registers keras_embed>Embedding: no custom_objects
model = keras.models.load_model(sys.argv[1])
np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))
layer = model.layers[0]
print(f"{type(layer).__module__}.{type(layer).__name__}")
"""


def load_sentences(split, path=DATA):
    """One split of the labelled corpus: sentences and 0/1 labels.

    Args:
        split: `"train"` or `"test"`.
        path: a CSV file with a header and columns `label` (`positive` or
            `negative`), `split` and `text`.

    Returns:
        `(texts, labels)`: a list of strings and a list of ints (1 for
        positive).
    """
    texts, labels = [], []
    with open(path, newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            if row["split"] == split:
                texts.append(row["text"])
                labels.append(1 if row["label"] == "positive" else 0)
    return texts, labels


def _step(number, title):
    print(f"\n{number}. {title}", flush=True)


def _vector(values):
    return "[" + " ".join(f"{v:6.3f}" for v in values) + "]"


def run(output_dir=None, epochs=12):
    """Runs the demo and prints what it does; returns an exit code.

    Args:
        output_dir: where to keep the saved model (`demo_classifier.keras`)
            and the picture (`demo_vectors.png`). Defaults to a temporary
            directory for the model, removed at the end, and the current
            directory for the picture.
        epochs: training epochs.

    Returns:
        0 when the reloaded model's predictions are identical, else 1.
    """
    started = time.perf_counter()
    if output_dir is None:
        with tempfile.TemporaryDirectory(prefix="keras-embed-demo-") as tmp:
            return _run(tmp, epochs, started, keep=False,
                        picture=os.path.abspath(PICTURE))
    output_dir = os.path.abspath(output_dir)  # Printed paths work from anywhere.
    os.makedirs(output_dir, exist_ok=True)
    return _run(output_dir, epochs, started, keep=True,
                picture=os.path.join(output_dir, PICTURE))


def _run(directory, epochs, started, keep, picture):
    import keras
    import numpy as np

    import keras_embed

    keras.utils.set_random_seed(SEED)
    texts, labels = load_sentences("train")
    test_texts, test_labels = load_sentences("test")
    print("keras-embed demo: what does an embedding layer do?")
    print(f"Data: {len(texts) + len(test_texts)} labelled sentences shipped in "
          "the package (keras_embed/data/sentences.csv), half positive, half "
          f"negative: {len(texts)} to train on, {len(test_texts)} held out")

    _step(1, "Text to padded ids (keras.layers.TextVectorization)")
    vectorize = keras.layers.TextVectorization()
    vectorize.adapt(texts)
    vocabulary = vectorize.get_vocabulary()
    print(f"   vocabulary: the {len(vocabulary) - 2} words of the training "
          "sentences; id 0 is padding, id 1 is [UNK] (unknown words)")
    ids = np.asarray(vectorize(list(EXAMPLES)))
    width = max(len(t) for t in EXAMPLES) + 2
    for text, row in zip(EXAMPLES, ids):
        print(f"   {repr(text):<{width}} -> {row.tolist()}")
    print(f"   shape {ids.shape}: the shorter sentence is padded with 0 "
          "to the length of the longer")

    _step(2, "Ids to vectors: each id selects one row of the layer's table")
    table_width = 8
    layer = keras_embed.Embedding(len(vocabulary), table_width, mask_zero=True)
    vectors = np.asarray(layer(ids))
    mask = np.asarray(layer.compute_mask(ids))
    table = np.asarray(layer.embeddings)
    print(f"   Embedding(input_dim={len(vocabulary)}, output_dim={table_width}, "
          f"mask_zero=True): a table of shape {table.shape}")
    print("   its rows are untrained: the initial values its initializer drew "
          "(uniform in [-0.05, 0.05]); training (step 3) changes them")
    print(f"   output shape {vectors.shape} = (sentences, ids, output_dim)")
    for text, row, row_vectors, row_mask in zip(EXAMPLES, ids, vectors, mask):
        print(f"   {text!r}:")
        for token_id, vector, keep_token in zip(row, row_vectors, row_mask):
            assert np.array_equal(vector, table[token_id])
            word = vocabulary[token_id] if token_id else "(pad)"
            note = "" if keep_token else "  masked"
            print(f"     {word:<6} id {token_id:>3} -> row {token_id:>3} "
                  f"{_vector(vector)}{note}")
    print("   mask (False where the id is 0, so later layers skip padding):")
    for line in str(mask).splitlines():
        print(f"     {line}")

    _step(3, "Training a classifier: Embedding(mask_zero=True) -> LSTM -> Dense")
    train_ids = np.asarray(vectorize(texts))
    train_labels = np.asarray(labels, "float32")
    test_ids = np.asarray(vectorize(test_texts))
    test_labels = np.asarray(test_labels, "float32")
    model = keras.Sequential([
        keras_embed.Embedding(len(vocabulary), CLASSIFIER_WIDTH, mask_zero=True,
                              name="word_embedding"),
        keras.layers.LSTM(16),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss="binary_crossentropy", metrics=["accuracy"])
    print(f"   training ids of shape {train_ids.shape}, {epochs} epochs")
    # A live progress bar on a terminal; one line per epoch in a log.
    verbose = 1 if sys.stdout.isatty() else 2
    model.fit(train_ids, train_labels, epochs=epochs, batch_size=32,
              verbose=verbose)
    _, train_accuracy = model.evaluate(train_ids, train_labels, verbose=0)
    _, accuracy = model.evaluate(test_ids, test_labels, verbose=0)
    print(f"   accuracy: {train_accuracy:.0%} on the training sentences, "
          f"{accuracy:.0%} on the {len(test_texts)} held-out sentences")
    print("   two sentences new to the model (in neither the training nor the "
          "held-out sentences), scored from 0 (negative) to 1 (positive):")
    scores = model.predict(np.asarray(vectorize(list(UNSEEN))), verbose=0)
    for text, score in zip(UNSEEN, scores[:, 0]):
        verdict = "positive" if score >= 0.5 else "negative"
        print(f"   {text!r}: {score:.2f} ({verdict})")

    _step(4, "Saving as .keras")
    path = os.path.join(directory, "demo_classifier.keras")
    model.save(path)
    print(f"   {path} ({os.path.getsize(path) / 1024:.0f} KiB)")

    _step(5, "Reloading in a fresh Python process, without custom_objects")
    ids_path = os.path.join(directory, "held_out_ids.npy")
    reloaded_path = os.path.join(directory, "reloaded_predictions.npy")
    np.save(ids_path, test_ids)
    expected = model.predict(test_ids, verbose=0)
    print("   as this command does (runnable as printed"
          + (")" if keep else "; the file is removed at the end of the demo: "
             "keep it with --output DIR)") + ":")
    print(f"   {reload_command(path)}")
    result = subprocess.run(
        [sys.executable, "-P", "-c", RELOAD_SCRIPT, path, ids_path, reloaded_path],
        capture_output=True, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        print("keras-embed demo: error: the fresh process could not reload "
              f"{path}", file=sys.stderr)
        return 1
    reloaded = np.load(reloaded_path)
    identical = np.array_equal(reloaded, expected)
    print(f"   loaded layer class: {result.stdout.strip().splitlines()[-1]}")
    print(f"   predictions on the {len(test_texts)} held-out sentences: "
          + ("identical, bit for bit" if identical else
             f"DIFFERENT (max difference {np.abs(reloaded - expected).max()})"))

    _step(6, "The trained word vectors in 2-D")
    drawn = _draw(model, vocabulary, picture)

    elapsed = time.perf_counter() - started
    print("\nSummary")
    print(f"   The classifier's Embedding maps each id to a row of a {len(vocabulary)} x {CLASSIFIER_WIDTH} "
          "table; mask_zero=True marks id 0 as padding.")
    print(f"   Classifier: {model.count_params():,} parameters, "
          f"{accuracy:.0%} held-out accuracy after {epochs} epochs.")
    saved = f"kept at {path}" if keep else "in a temporary directory, removed"
    print(f"   Saved .keras ({saved}); reloaded without custom_objects: "
          + ("identical predictions." if identical else "predictions differ."))
    if drawn:
        print(f"   Picture of the trained vectors: {picture}")
    print(f"   Done in {elapsed:.1f} s (after Python and TensorFlow started).")
    return 0 if identical else 1


def reload_command(path):
    """A shell command that loads the demo's model in a fresh Python, as
    printed in step 5 (`-P`: from any directory, see `RELOAD_SCRIPT`)."""
    code = ("import keras, keras_embed; "
            f"model = keras.models.load_model({json.dumps(str(path))}); "
            "print(type(model.layers[0]))")
    return shlex.join([sys.executable, "-P", "-c", code])


def _draw(model, vocabulary, picture):
    """Step 6: the PNG of the classifier's table; whether it was written."""
    import numpy as np

    if importlib.util.find_spec("matplotlib") is None:
        print("   skipped: the picture needs matplotlib: "
              "pip install 'keras-embed[demo]'")
        return False
    from keras_embed.tools import demo_plot

    table = np.asarray(model.layers[0].embeddings)
    # Each word's score as a one-word sentence: the most positive and the
    # most negative words are the ones the classifier leans on.
    scores = model.predict(np.arange(len(vocabulary))[:, None], verbose=0)[:, 0]
    demo_plot.plot_vectors(
        table, vocabulary, scores, picture, first_word=2,
        title=f"keras-embed demo: the classifier's {table.shape[0]} x "
        f"{table.shape[1]} table after training, in 2-D (PCA)")
    order = np.argsort(scores[2:]) + 2
    print("   a projection of the table's rows on their two principal "
          "components, words labelled")
    print("   most positive words: " + ", ".join(vocabulary[i] for i in order[::-1][:5]))
    print("   most negative words: " + ", ".join(vocabulary[i] for i in order[:5]))
    print(f"   wrote {picture}")
    return True
