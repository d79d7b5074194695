"""Keras 2 models in training carry on in Keras 3: the conversion matrix.

tf-keras itself writes the files, at test time
(tests/fixtures/write_keras2_training_matrix.py, in a subprocess): every
optimizer tf-keras ships, current and legacy, with its options, under
`float32` and `mixed_float16`, with a constant rate and with every
learning-rate schedule. Each model is trained 4 steps, saved as `.h5` and as
a SavedModel directory, and trained 4 steps more by tf-keras. Here each file
goes through `keras-embed convert` (the reader of its format, `swap`, a
`.keras` file) and is trained the same 4 steps in Keras 3. Either its
weights end where tf-keras's did, or the conversion said what it could not
carry (a note per thing), and the model still trains.
"""

import json
import math
import os
import sys

import keras
import numpy as np
import pytest

from conftest import FIXTURES
from conftest import write_with_tf_keras
from keras_embed.saving import saved_models

sys.path.insert(0, FIXTURES)
import write_keras2_training_matrix as matrix  # noqa: E402

pytestmark = [pytest.mark.matrix, pytest.mark.cross_kernel]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The directory tf-keras wrote the cells to (about a minute)."""
    out = write_with_tf_keras("write_keras2_training_matrix.py", tmp_path_factory.mktemp("keras2_matrix"), timeout=900)
    with open(out / "cells.json") as file:
        assert json.load(file)["cells"] == list(matrix.cells())
    return out


# The tolerance of the comparison with tf-keras's further steps: a few
# float32 roundings a step (seen: at most 2.4e-7 on weights within 1.5 of 0).
# rtol: a few ulps of each weight; atol: for weights near 0, about 8 ulps of
# weights about 1.
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
# Legacy centered RMSprop with momentum divides by sqrt(ms - mg**2), which
# cancels: under mixed_float16 the float16 gradients of tf-keras's legacy
# loss-scale path and of Keras 3's differ by an ulp where oneDNN picks the
# kernels, and the cancellation makes it 1.8e-4 (25 of 96 embedding values)
# after 4 steps. With TF_ENABLE_ONEDNN_OPTS=0 (Eigen's kernels) this cell
# matches to 1e-7 like the others; the same optimizer under float32, and
# every other optimizer under mixed_float16, match on either kernels.
CANCELLING = {"legacy.RMSprop_centered_momentum-mixed_float16": {"rtol": 1e-5, "atol": 5e-4}}


def must_say(cell, form):
    """What the conversion of `cell` cannot carry, as its notes must say
    (a phrase of each): where Keras 3 has no such state or rule."""
    optimizer, _, policy = matrix.cells()[cell]
    said = []
    if optimizer == "legacy.Nadam":
        said.append("legacy Nadam's momentum schedule (0.96 ** (0.004 * step)) is not Keras 3 "
                    "Nadam's (0.96 ** step)")
    if optimizer == "legacy.RMSprop":  # Without momentum.
        said.append("legacy RMSprop without momentum adds epsilon to the square root of its "
                    "average, Keras 3's RMSprop under the root")
    if optimizer.endswith("Nadam") and policy == "mixed_float16":
        said.append("Keras 3 does not save Nadam's running product of its momentum schedule "
                    "inside a LossScaleOptimizer (mixed_float16)")
    elif optimizer == "Nadam" and form == "h5":
        said.append("Nadam's running product of its momentum schedule is not in an .h5 file: "
                    "worked out from the step count by Keras 3's formula")
    return said


@pytest.mark.parametrize("form", ["h5", "directory"])
@pytest.mark.parametrize("cell", list(matrix.cells()))
def test_training_goes_on_as_in_keras2(written, cell, form, tmp_path):
    source = str(written / (cell + ".h5" if form == "h5" else cell))
    converted = str(tmp_path / "converted.keras")
    lines = saved_models.convert(source, converted)
    notes = [line for line in lines if line.startswith("  note:")]
    expected = np.load(written / (cell + ".npz"))
    model = keras.models.load_model(converted)
    history = model.fit(expected["ids"], expected["targets"], batch_size=8,
                        epochs=matrix.STEPS // 2, shuffle=False, verbose=0)
    after = model.get_weights()
    # Said: each thing that could not be carried, once, and nothing else.
    said = must_say(cell, form)
    assert len(notes) == len(said), notes
    for phrase in said:
        assert any(phrase in note for note in notes), (phrase, notes)
    if notes:  # Training goes on.
        assert all(math.isfinite(loss) for loss in history.history["loss"])
        assert all(np.isfinite(weights).all() for weights in after)
        return
    # Carried whole: tf-keras's 4 further steps and Keras 3's.
    assert len(after) == len(expected.files) - 2
    for index, weights in enumerate(after):
        np.testing.assert_allclose(weights, expected[f"after/{index}"],
                                   **CANCELLING.get(cell, TOLERANCE),
                                   err_msg=f"{cell} ({form}): weight {index}")


def not_carried_rows():
    """The migration guide's table of what the matrix's conversions say
    they cannot carry, row by row, worked out from `must_say`."""
    found = {}
    for cell, (optimizer, _, policy) in matrix.cells().items():
        for form in ("h5", "directory"):
            for phrase in must_say(cell, form):
                found.setdefault(phrase, {"optimizers": set(), "policies": set(), "forms": set()})
                found[phrase]["optimizers"].add(matrix.OPTIMIZERS[optimizer][0])
                found[phrase]["policies"].add(policy)
                found[phrase]["forms"].add({"h5": ".h5", "directory": "SavedModel directory"}[form])
    return [
        f"| {', '.join(sorted(row['optimizers']))} | {', '.join(sorted(row['policies']))} | "
        f"{', '.join(sorted(row['forms']))} | {phrase} |"
        for phrase, row in found.items()
    ]


def test_the_migration_guide_lists_what_is_not_carried():
    with open(os.path.join(os.path.dirname(FIXTURES), os.pardir, "docs", "migrating.md"),
              encoding="utf-8") as file:
        guide = file.read()
    missing = [row for row in not_carried_rows() if row not in guide]
    assert not missing, "docs/migrating.md lacks these rows:\n" + "\n".join(missing)
