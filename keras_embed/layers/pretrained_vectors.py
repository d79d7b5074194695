"""Pretrained word vectors (GloVe, word2vec, fastText) aligned to a
vocabulary: the code behind `keras_embed.pretrained`, its public path, whose
docstring describes the formats and gives an example.

`load_vectors` streams a vectors file and returns a matrix whose row `i` is
the vector of the vocabulary's token `i`, ready for
`keras_embed.Embedding.from_pretrained`.
"""

import gzip
import os
import sys

import numpy as np

FORMATS = ("glove", "word2vec", "word2vec_binary")
# Files at least this large get a progress bar when stderr is a terminal.
PROGRESS_BYTES = 64 * 2**20
_CHUNK = 2**20


class PretrainedVectors:
    """What `load_vectors` returns: the aligned matrix and its coverage.

    Attributes:
        matrix: float array of shape `(len(tokens), dim)`; row `i` is the
            vector of `tokens[i]`.
        tokens: the vocabulary, in row order (special tokens included).
        special: indices of the vocabulary's padding and OOV entries: the
            padding row is zeros, OOV rows are `missing` rows; neither is
            looked up in the file nor counted in `coverage`.
        found: how many vocabulary words have a vector in the file.
        missing: the vocabulary words without one, in vocabulary order.
        coverage: `found / (found + len(missing))` (1.0 for no words).
        dim: the vectors' dimension (`matrix.shape[1]`).
        format: the file's format (one of `FORMATS`).
        path: the file read.
    """

    def __init__(self, matrix, tokens, special, found, missing, fmt, path):
        self.matrix = matrix
        self.tokens = tokens
        self.special = special
        self.found = found
        self.missing = missing
        words = found + len(missing)
        self.coverage = found / words if words else 1.0
        self.dim = matrix.shape[1]
        self.format = fmt
        self.path = path

    def __repr__(self):
        rows, dim = self.matrix.shape
        words = self.found + len(self.missing)
        return (f"<PretrainedVectors {rows:,} x {dim} from "
                f"{os.path.basename(self.path)} ({self.format}): {self.found:,} "
                f"of {words:,} words found ({self.coverage:.1%})>")


def load_vectors(path, vocabulary, output_dim=None, missing="uniform",
                 format=None, lowercase=False, dtype="float32", seed=None,
                 progress=None):
    """Reads a GloVe, word2vec or fastText file into a matrix aligned to a
    vocabulary.

    Example:

    >>> import os, tempfile
    >>> import keras
    >>> from keras_embed import Embedding, pretrained
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.vec")
    >>> with open(path, "w") as file:
    ...     _ = file.write("2 3\\ngood 1 0 0\\nbad 0 1 0\\n")
    >>> lookup = keras.layers.StringLookup(vocabulary=["good", "bad", "meh"])
    >>> vectors = pretrained.load_vectors(path, lookup, seed=1)
    >>> vectors
    <PretrainedVectors 4 x 3 from tiny.vec (word2vec): 2 of 3 words found (66.7%)>
    >>> vectors.tokens, vectors.special
    (['[UNK]', 'good', 'bad', 'meh'], [0])
    >>> layer = Embedding.from_pretrained(vectors.matrix)
    >>> layer.input_dim, layer.output_dim, layer.trainable
    (4, 3, False)

    Args:
        path: the vectors file (optionally gzip-compressed).
        vocabulary: a list of tokens (row `i` for token `i`), or an adapted
            `keras.layers.TextVectorization` or `StringLookup`/`IntegerLookup`
            layer in `output_mode="int"`, whose padding (mask) entry gets a
            row of zeros and whose OOV entries get `missing` rows.
        output_dim: the dimension the vectors must have (the layer's
            `output_dim`); `None` takes the file's.
        missing: rows for words not in the file: a Keras initializer (name
            or object; default `"uniform"`, `keras_embed.Embedding`'s), a
            number, or a vector of length `dim`.
        format: one of `FORMATS`, or `None` to find it from the file.
        lowercase: match words case-insensitively: a vocabulary word takes
            the first file word equal to it once both are lowercased (files
            list frequent words first).
        dtype: the matrix's float dtype.
        seed: the seed of `missing`'s initializer, for reproducible rows.
        progress: show a progress bar on stderr: `None` when stderr is a
            terminal and the file has at least `PROGRESS_BYTES` bytes.

    Returns:
        A `PretrainedVectors`: `.matrix` of shape `(len(vocabulary), dim)`,
        `.coverage`, `.found`, `.missing`.

    Raises:
        ValueError: an unknown format, a file that is not one, a vector of
            another length than the file's dimension, a dimension that
            disagrees with `output_dim`, an empty or repeated vocabulary.
    """
    if format is not None and format not in FORMATS:
        raise ValueError(f"load_vectors: `format` must be one of {FORMATS} or "
                         f"None. Received: format={format!r}.")
    tokens, special, padding = _vocabulary_tokens(vocabulary)
    rows_of = {}
    for index, token in enumerate(tokens):
        if index in special:
            continue
        key = token.lower() if lowercase else token
        if key in rows_of and not lowercase:
            raise ValueError(f"load_vectors: the vocabulary holds {token!r} "
                             f"twice (entries {rows_of[key][0]} and {index}).")
        rows_of.setdefault(key, []).append(index)
    size = os.path.getsize(path)
    if progress is None:
        progress = size >= PROGRESS_BYTES and sys.stderr.isatty()
    with open(path, "rb") as raw:
        stream = gzip.GzipFile(fileobj=raw) if _is_gzip(raw) else raw
        bar = _Progress(path, size, raw) if progress else None
        try:
            fmt, dim, entries = _entries(stream, format, path)
            if output_dim is not None and dim != output_dim:
                raise ValueError(
                    f"load_vectors: the vectors in {path} have {dim} "
                    f"dimensions, but output_dim is {output_dim}: they must "
                    "be equal.")
            vectors = {}
            for number, (word, values) in enumerate(entries):
                if bar is not None and number % 4096 == 0:
                    bar.update()
                key = word.lower() if lowercase else word
                if key in rows_of and key not in vectors:
                    vectors[key] = values()
                    if len(vectors) == len(rows_of):
                        break  # Every word found: the rest is not needed.
        except (OSError, EOFError) as error:  # gzip's errors: bad or cut short.
            raise ValueError(f"load_vectors: {path} could not be read as "
                             f"gzip: {error}.") from None
        finally:
            if bar is not None:
                bar.close()
    matrix = _missing_rows(missing, (len(tokens), dim), dtype, seed)
    for key, vector in vectors.items():
        matrix[rows_of[key]] = vector
    if padding is not None:
        matrix[padding] = 0
    missing_words = [
        token for index, token in enumerate(tokens) if index not in special
        and (token.lower() if lowercase else token) not in vectors]
    found = sum(len(rows_of[key]) for key in vectors)
    return PretrainedVectors(matrix, tokens, sorted(special), found,
                             missing_words, fmt, path)


def _vocabulary_tokens(vocabulary):
    """(tokens, indices of special entries, index of the padding entry)."""
    if hasattr(vocabulary, "get_vocabulary"):
        name = getattr(vocabulary, "name", type(vocabulary).__name__)
        config = vocabulary.get_config()
        mode = config.get("output_mode", "int")
        if mode != "int" or config.get("invert", False):
            raise ValueError(
                f"load_vectors: the vocabulary layer '{name}' must map tokens "
                "to ids (output_mode='int', invert=False), as an Embedding "
                f"input. Received: output_mode={mode!r}, "
                f"invert={config.get('invert', False)}.")
        tokens = [_text(t) for t in vocabulary.get_vocabulary()]
        words = vocabulary.get_vocabulary(include_special_tokens=False)
        first_word = len(tokens) - len(words)
        # TextVectorization's mask token is always "" (not in its config).
        mask = config.get("mask_token", "")
        padding = 0 if first_word and mask is not None else None
        if not words:
            raise ValueError(f"load_vectors: the vocabulary layer '{name}' "
                             "has no vocabulary: adapt it or give it one.")
        return tokens, set(range(first_word)), padding
    if isinstance(vocabulary, (str, bytes)):
        raise ValueError("load_vectors: `vocabulary` must be a list of tokens "
                         "or a TextVectorization/StringLookup layer. Received "
                         f"a string: {vocabulary[:40]!r}.")
    tokens = [_text(t) for t in vocabulary]
    if not tokens:
        raise ValueError("load_vectors: the vocabulary is empty.")
    return tokens, set(), None


def _text(token):
    if isinstance(token, bytes):
        return token.decode("utf-8")
    return str(token)


def _is_gzip(raw):
    magic = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
    return magic == b"\x1f\x8b"


def _entries(stream, fmt, path):
    """(format, dim, iterator of (word, function returning its vector))."""
    first = stream.readline()
    fields = first.split()
    header = (len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit())
    if not fields:
        raise ValueError(f"load_vectors: {path} is empty or starts with a "
                         "blank line: not a vectors file.")
    if fmt == "glove" or (fmt is None and not header):
        dim = len(fields) - 1
        if dim < 1 or not _numbers(fields[1:]):
            raise ValueError(
                f"load_vectors: {path} is not a vectors file: its first line "
                "is neither a 'count dim' header nor a word and numbers.")
        return "glove", dim, _text_entries(stream, dim, path, first, 1)
    if not header:
        raise ValueError(f"load_vectors: {path} has no 'count dim' header "
                         f"line, which the {fmt} format starts with.")
    dim = int(fields[1])
    if dim < 1:
        raise ValueError(f"load_vectors: {path}'s header gives dimension {dim}.")
    if fmt is None:
        # Text or binary: a float32 vector's bytes are, but for a fluke,
        # not printable UTF-8 text.
        fmt = "word2vec" if _looks_like_text(stream.peek(4 * dim + 64)) else "word2vec_binary"
    if fmt == "word2vec":
        return fmt, dim, _text_entries(stream, dim, path, None, 2)
    return fmt, dim, _binary_entries(stream, dim, int(fields[0]), path)


def _numbers(fields):
    try:
        [float(f) for f in fields]
    except ValueError:
        return False
    return True


def _looks_like_text(data):
    text = data.decode("utf-8", "ignore")
    if len(text.encode("utf-8")) < len(data) - 3:  # Not UTF-8 (beyond a cut).
        return False
    return not any(ord(c) < 32 and c not in "\t\n\r" for c in text)


def _text_entries(stream, dim, path, first, number):
    lines = stream if first is None else _prepend(first, stream)
    for line_number, line in enumerate(lines, number):
        # Words may hold spaces (GloVe 840B): the last `dim` fields are the
        # vector. Bytes split only at ASCII whitespace, as the writers do.
        fields = line.rsplit(None, dim)
        if not fields:
            continue
        if len(fields) != dim + 1:
            raise ValueError(
                f"load_vectors: line {line_number} of {path} has "
                f"{len(fields) - 1} values after the word; every vector in the "
                f"file must have {dim} (the dimension of its "
                f"{'first line' if number == 1 else 'header'}).")
        word = fields[0].decode("utf-8", "replace")
        yield word, _parser(fields[1:], line_number, path)


def _prepend(first, stream):
    yield first
    yield from stream


def _parser(fields, line_number, path):
    def parse():
        try:
            return np.array(fields, dtype=np.float32)
        except ValueError:
            raise ValueError(f"load_vectors: line {line_number} of {path} "
                             "holds a value that is not a number.") from None
    return parse


def _binary_entries(stream, dim, count, path):
    width = 4 * dim
    buffer, start = b"", 0
    for number in range(count):
        while True:  # The word: bytes up to a space.
            space = buffer.find(b" ", start)
            if space >= 0 and len(buffer) - space - 1 >= width:
                break
            more = stream.read(_CHUNK)
            if not more:
                raise ValueError(
                    f"load_vectors: {path} ends inside vector {number + 1:,} "
                    f"of the {count:,} its header announces: cut short?")
            buffer, start = buffer[start:] + more, 0
        # The C tool ends each vector with a newline; gensim does not.
        word = buffer[start:space].lstrip(b"\n").decode("utf-8", "replace")
        data = buffer[space + 1:space + 1 + width]
        start = space + 1 + width
        yield word, lambda data=data: np.frombuffer(data, "<f4")


def _missing_rows(missing, shape, dtype, seed):
    if isinstance(missing, (int, float)) or (
            isinstance(missing, (list, tuple, np.ndarray))):
        value = np.asarray(missing, dtype)
        if value.ndim > 1 or (value.ndim == 1 and value.shape[0] != shape[1]):
            raise ValueError(
                f"load_vectors: `missing` must be a number, a vector of "
                f"length {shape[1]} (the vectors' dimension) or an "
                f"initializer. Received: an array of shape {value.shape}.")
        return np.array(np.broadcast_to(value, shape))
    import keras

    initializer = keras.initializers.get(missing)
    if seed is not None and hasattr(initializer, "seed"):
        initializer = initializer.__class__.from_config(
            {**initializer.get_config(), "seed": seed})
    return np.array(keras.ops.convert_to_numpy(initializer(shape, dtype)))


class _Progress:
    """A one-line progress bar on stderr, from the bytes read of the file."""

    def __init__(self, path, size, raw):
        self.label = os.path.basename(path)
        self.size = max(size, 1)
        self.raw = raw

    def update(self, done=None):
        if done is None:
            done = min(self.raw.tell() / self.size, 1.0)
        bar = "#" * int(30 * done)
        print(f"\rreading {self.label}: [{bar:<30}] {done:4.0%} of "
              f"{self.size / 2**20:,.1f} MB", end="", file=sys.stderr, flush=True)

    def close(self):
        # Done: the file was read to its end, or up to the last word sought.
        self.update(1.0)
        print(file=sys.stderr, flush=True)
