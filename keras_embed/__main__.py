"""`python -m keras_embed`: the `keras-embed` command line."""

import sys

from keras_embed.tools.cli import main

sys.exit(main())
