"""Pretrained word vectors (GloVe, word2vec, fastText) aligned to a vocabulary.

`load_vectors` streams a vectors file (a 1 GB file is never read into memory
whole: only the rows of the vocabulary's words are kept) and returns a matrix
whose row `i` is the vector of the vocabulary's token `i`, ready for
`keras_embed.Embedding.from_pretrained`.

Formats (found from the file's contents, or given as `format=`):

- `"glove"`: text, one `word v1 ... vD` per line, no header.
- `"word2vec"`: text with a `count dim` header line, then as GloVe; fastText's
  `.vec` files are this format.
- `"word2vec_binary"`: a `count dim` header line, then for each word its
  UTF-8 bytes, a space and `dim` little-endian float32 values (the C tool's
  and gensim's `binary=True` files).

Any of them may be gzip-compressed (found from the file's first bytes).

Example:

>>> import os, tempfile
>>> from keras_embed import pretrained
>>> path = os.path.join(tempfile.mkdtemp(), "tiny.txt")
>>> with open(path, "w") as file:
...     _ = file.write("the 0.1 0.2\\ncat 0.3 0.4\\n")
>>> vectors = pretrained.load_vectors(path, ["cat", "dog", "the"], missing=0.0)
>>> vectors.matrix
array([[0.3, 0.4],
       [0. , 0. ],
       [0.1, 0.2]], dtype=float32)
>>> vectors.coverage, vectors.missing
(0.6666666666666666, ['dog'])
"""

# The code lives in the layers' wing (keras_embed/layers/pretrained_vectors.py,
# beside the Embedding.from_pretrained it feeds); this is its public path, and
# the names are documented, shown and pickled under it.
from keras_embed.layers.pretrained_vectors import FORMATS
from keras_embed.layers.pretrained_vectors import PROGRESS_BYTES
from keras_embed.layers.pretrained_vectors import PretrainedVectors
from keras_embed.layers.pretrained_vectors import load_vectors

for _public in (PretrainedVectors, load_vectors):
    _public.__module__ = __name__
del _public

__all__ = ["FORMATS", "PROGRESS_BYTES", "PretrainedVectors", "load_vectors"]
