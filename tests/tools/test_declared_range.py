"""The versions pyproject.toml declares are versions that install and that
the suite was run on (benchmarks/version_matrix.py, its table in README.md)."""

import importlib.metadata
import importlib.util
import os
import re
import tomllib

from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _project():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as file:
        return tomllib.load(file)["project"]


def _lowest(specifier):
    (bound,) = [s for s in SpecifierSet(specifier) if s.operator == ">="]
    return Version(bound.version)


def test_requires_python_is_what_the_required_keras_installs_on():
    ours = _lowest(_project()["requires-python"])
    keras_needs = _lowest(importlib.metadata.metadata("keras")["Requires-Python"])
    assert ours >= keras_needs


def _matrix():
    path = os.path.join(ROOT, "benchmarks", "version_matrix.py")
    spec = importlib.util.spec_from_file_location("version_matrix", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_matrix_table_is_one_row_per_pair():
    assert _matrix().table([("2.16.2", "python3.11", "passes", "3 passed in 1.0s")]) == (
        "| TensorFlow | Python | Result | Last line |\n|---|---|---|---|\n"
        "| TensorFlow 2.16.2 | python3.11 | passes | 3 passed in 1.0s |"
    )


def test_the_readme_table_covers_the_declared_range():
    matrix = _matrix()
    DEFAULT_PYTHONS, DEFAULT_TENSORFLOWS = matrix.DEFAULT_PYTHONS, matrix.DEFAULT_TENSORFLOWS

    tensorflow = [d for d in _project()["dependencies"] if d.startswith("tensorflow")][0]
    declared = SpecifierSet(tensorflow.removeprefix("tensorflow"))
    # The matrix runs the lowest declared TensorFlow, and only declared ones.
    assert all(Version(v) in declared for v in DEFAULT_TENSORFLOWS)
    assert min(Version(v) for v in DEFAULT_TENSORFLOWS).release[:2] == _lowest(str(declared)).release[:2]
    requires_python = SpecifierSet(_project()["requires-python"])
    assert all(Version(v) in requires_python for v in DEFAULT_PYTHONS)
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as file:
        readme = file.read()
    section = readme.split("## Tested versions", 1)[1].split("\n## ", 1)[0]
    for version in DEFAULT_TENSORFLOWS:
        assert re.search(rf"\| TensorFlow {re.escape(version)} ", section), version
