"""The demo's picture: a trained embedding table in 2-D, words labelled.

Plotting stays here, out of the layer's import path: matplotlib is imported
only when `plot_vectors` runs.

Example:

>>> import os, tempfile
>>> import numpy as np
>>> from keras_embed.tools import demo_plot
>>> table = np.random.default_rng(0).normal(size=(6, 4))
>>> words = ["", "[UNK]", "good", "bad", "fine", "dull"]
>>> scores = np.array([0.5, 0.5, 0.9, 0.1, 0.7, 0.2])
>>> path = os.path.join(tempfile.mkdtemp(), "vectors.png")
>>> demo_plot.plot_vectors(table, words, scores, path, first_word=2, marked=1)
>>> open(path, "rb").read(4)
b'\\x89PNG'
"""

import numpy as np


def project(table):
    """The rows of `table` on their first two principal components.

    Returns:
        `(points, explained)`: an array of shape `(rows, 2)` and the share of
        the rows' variance each of the two axes holds.
    """
    centred = table - table.mean(axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2
    explained = variance[:2] / variance.sum()
    return centred @ axes[:2].T, explained


def plot_vectors(table, words, scores, path, first_word=0, marked=10,
                 labelled=40, title="Trained word vectors"):
    """Writes a PNG of `table`'s rows in 2-D: a principal-component
    projection, the `marked` most positive and most negative words (by
    `scores`) marked, the `labelled` most extreme words labelled.

    Args:
        table: float array `(rows, dim)`: an embedding table.
        words: the token of each row.
        scores: one number per row (the model's score for the word alone);
            above 0.5 is positive.
        path: the PNG to write.
        first_word: rows before it (padding, OOV) are left out.
        marked: how many words to mark at each end.
        labelled: how many words to label, half at each end.
        title: the figure's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    table = np.asarray(table, "float64")[first_word:]
    words = list(words)[first_word:]
    scores = np.asarray(scores, "float64")[first_word:]
    points, explained = project(table)
    order = np.argsort(scores)
    negative, positive = order[:marked], order[::-1][:marked]
    half = max(labelled // 2, marked)
    shown = set(order[:half]) | set(order[::-1][:half])

    figure, axes = pyplot.subplots(figsize=(9, 7))
    axes.scatter(points[:, 0], points[:, 1], s=8, c="#b0b0b0", label="other words")
    axes.scatter(*points[positive].T, s=40, c="#1a9850", marker="^",
                 label=f"{marked} most positive")
    axes.scatter(*points[negative].T, s=40, c="#d73027", marker="v",
                 label=f"{marked} most negative")
    strong = set(positive) | set(negative)
    for index in sorted(shown):
        colour = ("#1a9850" if index in set(positive) else
                  "#d73027" if index in set(negative) else "#555555")
        axes.annotate(words[index], points[index], fontsize=9 if index in strong else 7,
                      color=colour, xytext=(3, 3), textcoords="offset points",
                      fontweight="bold" if index in strong else "normal")
    axes.set_xlabel(f"first principal component ({explained[0]:.0%} of variance)")
    axes.set_ylabel(f"second principal component ({explained[1]:.0%} of variance)")
    axes.set_title(title)
    axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    pyplot.close(figure)
