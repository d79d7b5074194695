"""Property tests: for random valid inputs, our layer's output, mask, output
shape and dtype equal stock `keras.layers.Embedding`'s."""

import keras
import numpy as np
import tensorflow as tf
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import keras_embed

# The largest id each dtype holds exactly (float16: every integer to 2**11).
ID_DTYPES = {
    "int32": 2**31 - 1, "int64": 2**63 - 1, "int16": 2**15 - 1, "uint8": 255,
    "uint16": 2**16 - 1, "float16": 2**11, "float32": 2**24, "float64": 2**53,
}
POLICIES = ["float32", "mixed_float16", "mixed_bfloat16", "float64"]


@st.composite
def cases(draw):
    input_dim = draw(st.integers(1, 300))
    dtype = draw(st.sampled_from(sorted(ID_DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=1, max_size=4)))
    highest = min(input_dim - 1, ID_DTYPES[dtype])
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, highest + 1, size=shape)
    if draw(st.booleans()) and ids.size:
        ids.flat[rng.integers(0, ids.size, size=ids.size // 3 + 1)] = 0  # Padding.
    return dict(
        input_dim=input_dim,
        output_dim=draw(st.integers(1, 16)),
        ids=ids.astype(dtype),
        mask_zero=draw(st.booleans()),
        policy=draw(st.sampled_from(POLICIES)),
        table=rng.normal(size=(input_dim, 1)).astype("float32"),
        graph=draw(st.booleans()),
    )


def _pair(case):
    layers = []
    for layer_class in (keras_embed.Embedding, keras.layers.Embedding):
        layer = layer_class(
            case["input_dim"], case["output_dim"], mask_zero=case["mask_zero"], dtype=case["policy"]
        )
        layer.build()
        table = np.repeat(case["table"], case["output_dim"], axis=1)
        table += np.arange(case["output_dim"], dtype="float32") / 7
        layer.embeddings.assign(table)
        layers.append(layer)
    return layers


def _numpy(x):
    return None if x is None else keras.ops.convert_to_numpy(keras.ops.cast(x, "float64"))


@settings(max_examples=40, deadline=None)
@given(cases())
def test_output_mask_and_shape_equal_stock(case):
    ours, stock = _pair(case)
    ids = tf.constant(case["ids"])
    call = tf.function(ours) if case["graph"] else ours
    out, expected = call(ids), stock(ids)
    assert out.dtype == expected.dtype
    assert tuple(out.shape) == tuple(expected.shape) == (*case["ids"].shape, case["output_dim"])
    np.testing.assert_array_equal(_numpy(out), _numpy(expected))
    np.testing.assert_array_equal(_numpy(ours.compute_mask(ids)), _numpy(stock.compute_mask(ids)))
    symbolic = (None, *case["ids"].shape[1:])
    assert ours.compute_output_shape(symbolic) == stock.compute_output_shape(symbolic)
