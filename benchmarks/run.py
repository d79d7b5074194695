"""Runs the keras_embed benchmarks: `python benchmarks/run.py [--quick] [--output DIR] [--check]`.

`--check` also checks the project's floors and exits with status 1 when one is
missed (`keras-embed bench` prints the measurements only).

See benchmarks/README.md, and `keras_embed/benchmark.py` for what is measured.
"""

import sys

from keras_embed.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
