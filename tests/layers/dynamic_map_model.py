"""A NumPy model of `DynamicEmbedding`'s map, written from the rules in
`keras_embed/layers/row_admission.py`'s docstring, one key at a time, with
plain Python dicts and exact counts (no sketch, no hash table)."""

import numpy as np


class MapModel:
    def __init__(self, capacity, eviction="lru", ttl_steps=None, min_count=1, mask_key=None):
        self.capacity = capacity
        self.eviction = eviction
        self.ttl = ttl_steps
        self.min_count = min_count
        self.mask_key = mask_key
        self.step = 0
        self.row_of = {}  # key -> row
        self.key_of = {}  # row -> key
        self.count = {}  # row -> count
        self.last = {}  # row -> last step seen
        self.waiting = {}  # key holding no row -> times seen
        self.used = 0
        self.fresh = set()  # rows given to keys (no optimizer resets them here)

    def _holds(self, key, step):
        row = self.row_of.get(key)
        if row is None or self.key_of.get(row) != key:
            return False
        return self.ttl is None or step - self.last[row] <= self.ttl

    def train(self, keys):
        """One training call on the flat `keys`; returns each key's row."""
        self.step += 1
        step = self.step
        order, counts = [], {}
        for key in keys:
            if key == self.mask_key:
                continue
            if key not in counts:
                order.append(key)
                counts[key] = 0
            counts[key] += 1
        holding = {key: self.row_of[key] for key in order if self._holds(key, step)}
        to_admit = []
        for key in order:
            if key in holding:
                continue
            self.waiting[key] = self.waiting.get(key, 0) + counts[key]
            if self.waiting[key] >= self.min_count:
                to_admit.append(key)
        given = {}
        busy = set(holding.values())
        for key in to_admit:
            if self.used < self.capacity:
                row = self.used
                self.used += 1
            else:
                candidates = [r for r in range(self.capacity) if r not in busy]
                if not candidates:
                    break
                row = min(candidates, key=lambda r: (self._priority(r, step), r))
                old = self.key_of[row]
                if self.row_of.get(old) == row:
                    del self.row_of[old]
            busy.add(row)
            given[key] = row
            self.row_of[key] = row
            self.key_of[row] = key
            self.count[row] = self.waiting[key] if self.min_count > 1 else counts[key]
            self.last[row] = step
        for key in order:
            if key in holding:
                row = holding[key]
                self.count[row] += counts[key]
                self.last[row] = step
        rows = {**holding, **given}
        self.fresh |= set(given.values())
        return np.array([rows.get(key, -1) if key != self.mask_key else -1 for key in keys])

    def _priority(self, row, step):
        if self.ttl is not None and step - self.last[row] > self.ttl:
            return (-1, -(step - self.last[row]))  # Free rows first, oldest first.
        if self.eviction == "lru":
            return (0, self.last[row])
        return (0, self.count[row])

    def lookup(self, keys):
        return np.array([self.row_of[k] if self._holds(k, self.step) else -1 for k in keys])

    def vocabulary(self):
        rows = sorted(r for k, r in self.row_of.items() if self._holds(k, self.step))
        return {
            "key": np.array([self.key_of[r] for r in rows], np.int64),
            "row": np.array(rows, np.int32),
            "count": np.array([self.count[r] for r in rows], np.int32),
            "last_seen": np.array([self.last[r] for r in rows], np.int64),
        }
