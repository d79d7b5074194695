"""keras_embed.layers.pretrained_vectors (public path: keras_embed.pretrained):
load_vectors and Embedding.from_pretrained, against files written by gensim
(tests/fixtures/pretrained/)."""

import gzip
import os

import keras
import numpy as np
import pytest
from conftest import FIXTURES

import keras_embed
from keras_embed.layers import pretrained_vectors

HERE = os.path.join(FIXTURES, "pretrained")
SOURCE = np.load(os.path.join(HERE, "vectors.npz"))
WORDS = [str(w) for w in SOURCE["words"]]
VECTORS = SOURCE["vectors"]
FILES = {
    "vectors.w2v.bin": "word2vec_binary",
    "vectors.w2v.txt": "word2vec",
    "vectors.glove.txt": "glove",
    "vectors.vec.gz": "word2vec",
}


def row(word):
    return VECTORS[WORDS.index(word)]


@pytest.mark.parametrize("name", sorted(FILES))
def test_each_format_found_and_aligned(name):
    vocabulary = ["dog", "café", "unicorn", "the"]
    vectors = pretrained_vectors.load_vectors(os.path.join(HERE, name), vocabulary,
                                      missing=0.0)
    assert vectors.format == FILES[name]
    assert vectors.matrix.shape == (4, 5) and vectors.matrix.dtype == np.float32
    # gensim writes text values as float32's repr: they read back exactly.
    np.testing.assert_array_equal(vectors.matrix[0], row("dog"))
    np.testing.assert_array_equal(vectors.matrix[1], row("café"))
    np.testing.assert_array_equal(vectors.matrix[2], np.zeros(5))
    np.testing.assert_array_equal(vectors.matrix[3], row("the"))
    assert (vectors.found, vectors.missing, vectors.coverage) == (3, ["unicorn"], 0.75)


@pytest.mark.parametrize("name", sorted(FILES))
def test_format_given_explicitly(name):
    vectors = pretrained_vectors.load_vectors(os.path.join(HERE, name), ["mat"],
                                      format=FILES[name])
    np.testing.assert_array_equal(vectors.matrix[0], row("mat"))


def test_c_tool_binary_with_newline_after_each_vector(tmp_path):
    # The C word2vec tool ends each vector with "\n"; gensim does not.
    path = tmp_path / "c.bin"
    body = b"".join(w.encode() + b" " + row(w).tobytes() + b"\n" for w in WORDS)
    path.write_bytes(f"{len(WORDS)} 5\n".encode() + body)
    vectors = pretrained_vectors.load_vectors(path, ["sat", "dog"])
    np.testing.assert_array_equal(vectors.matrix, np.stack([row("sat"), row("dog")]))


def test_text_vectorization_padding_and_oov():
    layer = keras.layers.TextVectorization(vocabulary=["the", "cat", "zebra"])
    vectors = pretrained_vectors.load_vectors(os.path.join(HERE, "vectors.glove.txt"),
                                      layer, seed=3)
    assert vectors.tokens == ["", "[UNK]", "the", "cat", "zebra"]
    assert vectors.special == [0, 1]
    np.testing.assert_array_equal(vectors.matrix[0], np.zeros(5))  # padding
    np.testing.assert_array_equal(vectors.matrix[2:4], np.stack([row("the"), row("cat")]))
    # OOV and missing rows: keras_embed.Embedding's initializer, uniform(-0.05, 0.05).
    assert np.all(np.abs(vectors.matrix[[1, 4]]) <= 0.05)
    assert np.any(vectors.matrix[[1, 4]] != 0)
    assert (vectors.found, vectors.missing) == (2, ["zebra"])
    assert vectors.coverage == pytest.approx(2 / 3)


def test_string_lookup_with_mask_and_two_oov_rows():
    lookup = keras.layers.StringLookup(vocabulary=["sat", "on"], mask_token="",
                                       num_oov_indices=2)
    vectors = pretrained_vectors.load_vectors(os.path.join(HERE, "vectors.w2v.bin"),
                                      lookup, missing=7.0)
    assert vectors.special == [0, 1, 2]
    expected = np.stack([np.zeros(5), np.full(5, 7.0), np.full(5, 7.0),
                         row("sat"), row("on")])
    np.testing.assert_array_equal(vectors.matrix, expected)
    assert vectors.coverage == 1.0
    # The ids the lookup gives address the matching rows.
    ids = np.asarray(lookup(["on", "sat"]))
    np.testing.assert_array_equal(vectors.matrix[ids], np.stack([row("on"), row("sat")]))


def test_lowercase_matches_case_insensitively():
    path = os.path.join(HERE, "vectors.w2v.txt")
    assert pretrained_vectors.load_vectors(path, ["paris"], missing=0.0).missing == ["paris"]
    vectors = pretrained_vectors.load_vectors(path, ["paris", "THE"], lowercase=True)
    np.testing.assert_array_equal(vectors.matrix, np.stack([row("Paris"), row("the")]))


def test_missing_value_vector_and_initializer_seeded():
    path = os.path.join(HERE, "vectors.glove.txt")
    vector = np.arange(5, dtype="float32")
    given = pretrained_vectors.load_vectors(path, ["nope", "cat"], missing=vector)
    np.testing.assert_array_equal(given.matrix[0], vector)
    first = pretrained_vectors.load_vectors(path, ["nope"], missing="glorot_normal", seed=5)
    again = pretrained_vectors.load_vectors(path, ["nope"], missing="glorot_normal", seed=5)
    np.testing.assert_array_equal(first.matrix, again.matrix)
    with pytest.raises(ValueError, match=r"`missing` must be a number, a vector "
                       r"of length 5 .* Received: an array of shape \(3,\)"):
        pretrained_vectors.load_vectors(path, ["nope"], missing=[1, 2, 3])


def test_output_dim_that_disagrees_names_both():
    with pytest.raises(ValueError, match=r"vectors.glove.txt have 5 dimensions, "
                       r"but output_dim is 300"):
        pretrained_vectors.load_vectors(os.path.join(HERE, "vectors.glove.txt"), ["cat"],
                                output_dim=300)


def test_from_pretrained_frozen_trainable_save_and_load(tmp_path):
    vectors = pretrained_vectors.load_vectors(os.path.join(HERE, "vectors.vec.gz"),
                                      ["", "cat", "mat"], missing=0.0)
    layer = keras_embed.Embedding.from_pretrained(vectors.matrix, mask_zero=True,
                                                  name="glove")
    assert (layer.input_dim, layer.output_dim, layer.trainable) == (3, 5, False)
    model = keras.Sequential([keras.Input((2,), dtype="int32"), layer,
                              keras.layers.GlobalAveragePooling1D(),
                              keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    assert [w.name for w in model.trainable_weights] == ["kernel", "bias"]
    model.fit(np.array([[1, 2]]), np.ones((1, 1)), verbose=0)
    np.testing.assert_array_equal(layer.embeddings.numpy(), vectors.matrix)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path).layers[0]
    assert type(loaded) is keras_embed.Embedding and loaded.trainable is False
    np.testing.assert_array_equal(loaded.embeddings.numpy(), vectors.matrix)
    trainable = keras_embed.Embedding.from_pretrained(vectors.matrix, freeze=False)
    assert trainable.trainable and len(trainable.trainable_weights) == 1


def test_from_pretrained_errors():
    with pytest.raises(ValueError, match=r"`matrix` must be 2-D, of shape "
                       r"\(input_dim, output_dim\)\. Received: shape \(4,\)"):
        keras_embed.Embedding.from_pretrained(np.zeros(4))
    with pytest.raises(TypeError, match=r"`output_dim` comes from `matrix`.*"
                       r"Received: output_dim=3"):
        keras_embed.Embedding.from_pretrained(np.zeros((4, 2)), output_dim=3)


def test_bad_files_and_vocabularies(tmp_path):
    glove = os.path.join(HERE, "vectors.glove.txt")
    bad_line = tmp_path / "bad.txt"
    bad_line.write_text("a 1 2 3\nb 1 2\n")
    with pytest.raises(ValueError, match=r"line 2 of .*bad.txt has 2 values "
                       r"after the word; every vector in the file must have 3"):
        pretrained_vectors.load_vectors(bad_line, ["b"])
    not_numbers = tmp_path / "words.txt"
    not_numbers.write_text("hello world\n")
    with pytest.raises(ValueError, match=r"words.txt is not a vectors file"):
        pretrained_vectors.load_vectors(not_numbers, ["hello"])
    cut = tmp_path / "cut.bin"
    cut.write_bytes(open(os.path.join(HERE, "vectors.w2v.bin"), "rb").read()[:-7])
    with pytest.raises(ValueError, match=r"ends inside vector 8 of the 8 its "
                       r"header announces: cut short\?"):
        pretrained_vectors.load_vectors(cut, ["dog"])
    broken_gzip = tmp_path / "broken.vec.gz"
    broken_gzip.write_bytes(gzip.compress(b"2 2\na 1 2\nb 3 4\n")[:-10])
    with pytest.raises(ValueError, match=r"could not be read as gzip"):
        pretrained_vectors.load_vectors(broken_gzip, ["zzz"])
    with pytest.raises(ValueError, match=r"`format` must be one of .* "
                       r"Received: format='fasttext'"):
        pretrained_vectors.load_vectors(glove, ["a"], format="fasttext")
    with pytest.raises(ValueError, match=r"has no 'count dim' header line"):
        pretrained_vectors.load_vectors(glove, ["a"], format="word2vec")
    with pytest.raises(ValueError, match=r"holds 'cat' twice \(entries 0 and 2\)"):
        pretrained_vectors.load_vectors(glove, ["cat", "dog", "cat"])
    with pytest.raises(ValueError, match=r"the vocabulary is empty"):
        pretrained_vectors.load_vectors(glove, [])
    with pytest.raises(ValueError, match=r"Received a string: 'cat'"):
        pretrained_vectors.load_vectors(glove, "cat")
    with pytest.raises(ValueError, match=r"'multi' must map tokens to ids .* "
                       r"Received: output_mode='multi_hot'"):
        pretrained_vectors.load_vectors(glove, keras.layers.StringLookup(
            vocabulary=["a"], output_mode="multi_hot", name="multi"))
    with pytest.raises(ValueError, match=r"'empty' has no vocabulary: adapt it"):
        pretrained_vectors.load_vectors(glove, keras.layers.TextVectorization(name="empty"))


def test_stops_reading_once_every_word_is_found(tmp_path):
    # A broken line after the words sought is never reached: the file is
    # streamed, not read whole.
    path = tmp_path / "long.txt"
    path.write_text("a 1 2\nb 3 4\nthis line is broken\n")
    vectors = pretrained_vectors.load_vectors(path, ["b", "a"])
    np.testing.assert_array_equal(vectors.matrix, [[3, 4], [1, 2]])


def test_progress_bar_on_stderr(capsys):
    pretrained_vectors.load_vectors(os.path.join(HERE, "vectors.w2v.txt"), ["cat"],
                            progress=True)
    err = capsys.readouterr().err
    assert "reading vectors.w2v.txt: [" in err and "100%" in err
    pretrained_vectors.load_vectors(os.path.join(HERE, "vectors.w2v.txt"), ["cat"])
    assert capsys.readouterr().err == ""  # Not a terminal, small file.


def test_the_public_path_is_keras_embed_pretrained():
    import pickle

    from keras_embed import pretrained

    for name in ("FORMATS", "PROGRESS_BYTES", "PretrainedVectors", "load_vectors"):
        assert getattr(pretrained, name) is getattr(pretrained_vectors, name), name
    assert pretrained.__all__ == ["FORMATS", "PROGRESS_BYTES", "PretrainedVectors", "load_vectors"]
    assert pretrained.load_vectors.__module__ == "keras_embed.pretrained"
    vectors = pretrained.load_vectors(os.path.join(HERE, "vectors.glove.txt"), ["cat"], missing=0.0)
    again = pickle.loads(pickle.dumps(vectors))
    assert type(again) is pretrained.PretrainedVectors
    np.testing.assert_array_equal(again.matrix, vectors.matrix)
