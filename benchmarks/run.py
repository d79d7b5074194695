"""Runs the keras_embed benchmarks: `python benchmarks/run.py [--quick] [--output DIR]`.

See benchmarks/README.md, and `keras_embed/tools/benchmark.py` for what is measured.
"""

import os
import sys

# Before TensorFlow starts: its BFC allocator keeps the memory statistics the
# peak-memory figures read (the default CPU allocator keeps none on some machines).
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

from keras_embed.tools.benchmark import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
