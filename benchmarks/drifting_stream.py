"""A synthetic, drifting stream of (key, context, label) examples, with a
fixed seed: keys that come and go, each with a hidden way of making labels.

For `benchmarks/dynamic_drift.py`: what a row of its own per key is worth
when the keys outnumber the rows many times over and the popular ones change.

- **Keys.** `keys` items (e.g. 40,000: 20x a table of 2,000 rows), each a
  large positive int64 id. Item `i` appears at time `birth[i]`, spread evenly
  over the stream (a few before it starts, so that it starts with items
  alive), and fades after: at time `t` (0 to 1 over the stream) its
  popularity is `weight[i] * exp(-(t - birth[i]) / lifetime)`, zero before
  its birth; `weight` is log-normal (`popularity_spread`), so a few items of
  each generation are far more popular than the rest. The window of popular
  items slides over the key space: with `lifetime=0.05`, a stretch of a
  thirtieth of the stream sees about 6,000 distinct keys, and about a third
  of its examples have keys the previous stretch did not have.
- **Labels.** Each item has a hidden bias `bias[i]` and a hidden vector
  `vector[i]` (`context` dims). An example of item `i` has a context `x`
  (standard normal) and a label drawn from Bernoulli(sigmoid(bias[i] +
  vector[i] . x)): a model with a row of its own per key (a bias and a
  vector) can learn it; one that shares a row between keys, or gives unseen
  keys one row, learns an average. `probability` is the label's true
  probability, whose binary entropy is the lowest log loss any model can
  reach.

Example:

>>> stream = DriftingStream(keys=100, examples=1_000, stretches=4, seed=1)
>>> part = stream.stretch(0)
>>> sorted(part), part["key"].shape, part["x"].shape
(['key', 'label', 'probability', 'x'], (250,), (250, 4))
>>> bool((stream.stretch(0)["key"] == part["key"]).all())   # a fixed seed
True
"""

import numpy as np

# Odd: item i -> (i + 1) * SPREAD mod 2**63 sends distinct items to distinct
# large positive ids.
SPREAD = 0x9E3779B97F4A7C15


class DriftingStream:
    """The stream, in `stretches` equal parts (see the module's docstring).

    Args:
        keys: how many items (distinct keys) in all.
        examples: examples in the whole stream.
        stretches: parts the stream is cut into, in time order.
        lifetime: how fast an item fades, as a share of the stream.
        popularity_spread: sigma of the log-normal item weights.
        context: dims of each example's context vector.
        seed: the seed of everything.
        chunk: examples drawn from one popularity (the drift's time step).
    """

    def __init__(self, keys=40_000, examples=1_200_000, stretches=30, lifetime=0.05,
                 popularity_spread=1.0, context=4, seed=0, chunk=2_000):
        self.keys, self.examples, self.stretches = keys, examples, stretches
        self.lifetime, self.context, self.seed = lifetime, context, seed
        self.chunk = chunk
        self.per_stretch = examples // stretches
        rng = np.random.default_rng([seed, 0])
        start = -3 * lifetime  # items born before the stream starts
        self.birth = start + (1 - start) * np.arange(keys) / keys
        self.weight = rng.lognormal(0.0, popularity_spread, keys)
        self.bias = rng.normal(-1.0, 1.5, keys)
        self.vector = rng.normal(0.0, 0.7, (keys, context))
        self.ids = ((np.arange(keys, dtype=np.uint64) + np.uint64(1)) * np.uint64(SPREAD)
                    & np.uint64(2**63 - 1)).astype(np.int64)

    def popularity(self, time):
        """Each item's probability of being an example's key at `time`."""
        age = time - self.birth
        weights = np.where(age >= 0, self.weight * np.exp(-np.maximum(age, 0) / self.lifetime), 0)
        return weights / weights.sum()

    def stretch(self, index):
        """Stretch `index`'s examples, in time order: a dict of NumPy arrays
        `key` (int64 ids), `x` (float32, context), `label` (float32 0/1) and
        `probability` (the label's true probability)."""
        rng = np.random.default_rng([self.seed, 1, index])
        first = index * self.per_stretch
        items = []
        for start in range(first, first + self.per_stretch, self.chunk):
            size = min(self.chunk, first + self.per_stretch - start)
            time = (start + size / 2) / self.examples
            items.append(rng.choice(self.keys, size, p=self.popularity(time)))
        items = np.concatenate(items)
        x = rng.standard_normal((len(items), self.context)).astype("float32")
        logits = self.bias[items] + np.einsum("nd,nd->n", self.vector[items], x)
        probability = 1 / (1 + np.exp(-logits))
        label = (rng.random(len(items)) < probability).astype("float32")
        return {"key": self.ids[items], "x": x, "label": label, "probability": probability}


def entropy(probability):
    """Mean binary entropy (nats) of labels with these probabilities: the
    lowest mean log loss any model can reach on them."""
    p = np.clip(probability, 1e-12, 1 - 1e-12)
    return float(np.mean(-(p * np.log(p) + (1 - p) * np.log(1 - p))))
