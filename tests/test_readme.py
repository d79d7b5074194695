"""The README's examples run as written.

Every block fenced as ```python in README.md is run, each in a fresh
namespace, in the order it appears. Blocks that are not meant to run use
another fence (```text, ```bash).
"""

import os
import re

import keras
import pytest

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def _python_blocks():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)
    assert blocks, "README.md has no ```python blocks"
    return blocks


@pytest.mark.parametrize("block", _python_blocks(), ids=lambda b: b.splitlines()[0][:40])
def test_readme_example_runs(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that save files write them here
    keras.utils.set_random_seed(0)
    exec(compile(block, README, "exec"), {"__name__": "readme_example"})
