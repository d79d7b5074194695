"""Runs the test suite across the TensorFlow and Python versions that
pyproject.toml declares, one fresh virtual environment per pair, and prints
the table README.md shows ("Tested versions").

Not run by CI (each pair installs TensorFlow, ~600 MB, and runs the whole
suite: about 10 minutes on 2 cores). Usage:

    python benchmarks/version_matrix.py                      # the whole matrix
    python benchmarks/version_matrix.py --python python3.12 --tensorflow 2.16.2
    python benchmarks/version_matrix.py --pytest-args "-q tests/tools"

A pair that pip cannot install (no TensorFlow wheel for that Python) is
reported as such, with pip's last line.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The declared range: requires-python and the tensorflow dependency in
# pyproject.toml (tests/tools/test_declared_range.py checks they agree).
DEFAULT_PYTHONS = ("3.11", "3.12", "3.13")
DEFAULT_TENSORFLOWS = ("2.16.2", "2.17.1", "2.18.1", "2.19.1", "2.20.0", "2.21.0")
KERAS = "3.15.1"


def run_pair(python, tensorflow, pytest_args, keep=False):
    """Installs the package with `tensorflow` into a new venv of `python`
    and runs pytest there; returns (status, pytest's or pip's last line)."""
    folder = tempfile.mkdtemp(prefix=f"keras_embed_tf{tensorflow}_py")
    try:
        made = subprocess.run([python, "-m", "venv", folder], capture_output=True, text=True)
        if made.returncode:
            return "no Python", _last_line(made.stderr)
        pip = os.path.join(folder, "bin", "pip")
        install = subprocess.run(
            [pip, "install", "-q", f"tensorflow=={tensorflow}", f"keras=={KERAS}",
             f"{ROOT}[test]"],
            capture_output=True, text=True,
        )
        if install.returncode:
            return "does not install", _last_line(install.stderr)
        test = subprocess.run(
            [os.path.join(folder, "bin", "python"), "-m", "pytest", *pytest_args],
            capture_output=True, text=True, cwd=ROOT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        return ("passes" if test.returncode == 0 else "fails"), _last_line(test.stdout)
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def _last_line(text):
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return re.sub(r"\s+", " ", lines[-1]).strip("= ") if lines else ""


def table(rows):
    """The Markdown table README.md shows: one row per pair."""
    lines = ["| TensorFlow | Python | Result | Last line |", "|---|---|---|---|"]
    for tensorflow, python, status, line in rows:
        lines.append(f"| TensorFlow {tensorflow} | {python} | {status} | {line} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", action="append",
                        help="interpreters (default: python3.11, python3.12, python3.13)")
    parser.add_argument("--tensorflow", action="append",
                        help=f"versions (default: {', '.join(DEFAULT_TENSORFLOWS)})")
    parser.add_argument("--pytest-args", default="-q -p no:cacheprovider tests")
    parser.add_argument("--keep", action="store_true", help="keep the venvs")
    options = parser.parse_args(argv)
    pythons = options.python or [f"python{v}" for v in DEFAULT_PYTHONS]
    tensorflows = options.tensorflow or list(DEFAULT_TENSORFLOWS)
    rows = []
    for tensorflow in tensorflows:
        for python in pythons:
            status, line = run_pair(python, tensorflow, options.pytest_args.split(), options.keep)
            rows.append((tensorflow, python, status, line))
            print(f"TensorFlow {tensorflow}, {python}: {status} ({line})", file=sys.stderr)
    print(table(rows))


if __name__ == "__main__":
    main()
