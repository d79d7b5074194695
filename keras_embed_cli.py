"""The `keras-embed` console script's entry point: quick, and quiet.

This module stands outside the `keras_embed` package on purpose: importing
anything inside it runs `keras_embed/__init__.py`, which imports TensorFlow
(seconds) to register the layer with Keras. Here the command line is parsed
first, and `--help`, usage errors and missing files are answered without
TensorFlow. Only then is `keras_embed.tools.cli` imported, with file
descriptor 2 sent to a temporary file meanwhile: TensorFlow's C++ start-up
notices ("WARNING: All log messages before absl::InitializeLog() ...",
"cudart_stub ... Could not find cuda drivers", CPU feature lines), which it
writes before it reads `TF_CPP_MIN_LOG_LEVEL`, are dropped, and shown only
if the import fails. `TF_CPP_MIN_LOG_LEVEL` defaults to 2 in this process
(errors only) unless it is set. Library users' processes are untouched.

The commands themselves are in `keras_embed.tools.cli`; this module imports
only the standard library.

Example:

>>> import keras_embed_cli
>>> keras_embed_cli.main(["inspect", "no-such-model.keras"])
1
"""

import argparse
import importlib
import importlib.util
import os
import sys
import tempfile

PROG = "keras-embed"
# keras_embed.tools.benchmark.SECTIONS, written out: --help imports no TensorFlow.
BENCH_SECTIONS = ("lookup", "training", "optimizers", "bags")


def parser():
    """The `keras-embed` argument parser (standard library only)."""
    main_parser = argparse.ArgumentParser(
        prog=PROG,
        description="A drop-in keras.layers.Embedding for Keras 3: demo, "
        "saved-model inspection and conversion, benchmarks.",
    )
    commands = main_parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    demo = commands.add_parser(
        "demo",
        help="what an embedding layer does: ids, table rows, mask, a small "
        "text classifier trained, saved and reloaded, a picture of its vectors",
        description="Turns 'This is a text' and 'This is not a text' into "
        "padded ids, shows the table rows they select and the mask, trains a "
        "small text classifier on the labelled sentences shipped in the "
        "package, saves it as .keras, reloads it in a fresh process without "
        "custom_objects and checks the predictions are identical, and draws "
        "its trained word vectors in 2-D (a PNG; needs matplotlib). No "
        "network.",
    )
    demo.add_argument(
        "--output", metavar="DIR",
        help="keep the saved model and the PNG in DIR (default: the model in "
        "a temporary directory, removed at the end; the PNG in the current "
        "directory)",
    )
    demo.add_argument(
        "--epochs", type=int, default=12, metavar="N",
        help="training epochs (default: 12)",
    )

    inspect = commands.add_parser(
        "inspect",
        help="a table of the embedding layers in a .keras or .h5 file or a "
        "Keras 2 SavedModel directory",
        description="Prints a table of the embedding layers in a saved model "
        "(.keras or .h5): name, class, input_dim, output_dim, mask_zero, "
        "input_length, params, dtype, quantization, size in MB.",
    )
    inspect.add_argument(
        "file", metavar="FILE",
        help="a .keras or .h5 file, or a Keras 2 SavedModel directory",
    )

    convert = commands.add_parser(
        "convert",
        help="rewrite a saved model with its embedding layers swapped",
        description="Loads IN (a .keras or .h5 file, or a Keras 2 SavedModel "
        "directory, rebuilt from its keras_metadata.pb and variables/ "
        "without running its code), replaces its keras.layers.Embedding "
        "layers by "
        "keras_embed.Embedding (--to keras_embed, the default) or the "
        "reverse (--to stock), and saves the result as OUT (.keras or .h5, "
        "by its extension). Writes a temporary file next to OUT and renames "
        "it; never modifies IN.",
    )
    convert.add_argument(
        "input", metavar="IN",
        help="a .keras or .h5 file, or a Keras 2 SavedModel directory",
    )
    convert.add_argument("output", metavar="OUT", help="a .keras or .h5 path")
    convert.add_argument(
        "--to", choices=("keras_embed", "stock"), default="keras_embed",
        help="keras_embed: use keras_embed.Embedding (default); stock: use "
        "keras.layers.Embedding, for places without keras_embed",
    )
    convert.add_argument(
        "--force", action="store_true", help="overwrite OUT if it exists"
    )

    bench = commands.add_parser(
        "bench",
        help="measure lookups and training steps on this machine",
        description="Runs the benchmark suite (keras_embed.tools.benchmark) "
        "and prints its results: lookup and training-step times of "
        "keras_embed.Embedding, stock Embedding and raw tf.gather, each "
        "optimizer's training step, the ways to reduce bags of ids, and peak "
        "memory; writes them as JSON, Markdown and a plot.",
    )
    bench.add_argument(
        "--quick", action="store_true", help="a short run with small sizes"
    )
    bench.add_argument(
        "--sections", nargs="+", choices=BENCH_SECTIONS, default=BENCH_SECTIONS,
        help="what to measure (default: all; the plot needs lookup and training)",
    )
    bench.add_argument(
        "--output", metavar="DIR", default=os.path.join("benchmarks", "results"),
        help="folder for benchmark.json, .md and .png (default: %(default)s)",
    )
    return main_parser


def check(args):
    """The errors found without TensorFlow: a sentence, or `None`."""
    if args.command == "demo" and args.epochs < 1:
        return "--epochs must be at least 1"
    if args.command == "inspect" and not os.path.exists(args.file):
        return f"{args.file}: no such file"
    if args.command == "convert" and not os.path.exists(args.input):
        return f"{args.input}: no such file"
    if args.command == "bench" and not _installed("matplotlib"):
        return ("the benchmark suite draws its plot with matplotlib, which is "
                "not installed: pip install 'keras-embed[bench]'")
    return None


def _installed(name):
    # A module set to None in sys.modules (how tests hide one) is missing.
    if name in sys.modules:
        return sys.modules[name] is not None
    return importlib.util.find_spec(name) is not None


def quiet_import(name):
    """Imports module `name` with TensorFlow's start-up notices dropped.

    Anything written to file descriptor 2 during the import, and while
    TensorFlow then finds its devices, goes to a temporary file, which is
    copied to stderr only if that fails. A module already imported is
    returned as it is.
    """
    if name in sys.modules:
        return sys.modules[name]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            module = importlib.import_module(name)
            tensorflow = sys.modules.get("tensorflow")
            if tensorflow is not None:
                # Finding the devices (cuInit, on a machine without a GPU
                # "E ... failed call to cuInit") writes more start-up lines.
                tensorflow.config.list_physical_devices()
        except BaseException:
            sys.stderr.flush()
            os.dup2(saved, 2)
            capture.seek(0)
            os.write(2, capture.read())
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
    return module


def main(argv=None):
    """Runs `keras-embed` with `argv` (default: `sys.argv[1:]`).

    Returns:
        The exit status: 0 on success, 1 on a user error, 2 on a usage
        error (from argparse, which exits).
    """
    args = parser().parse_args(argv)
    problem = check(args)
    if problem is not None:
        print(f"{PROG} {args.command}: error: {problem}", file=sys.stderr)
        return 1
    if args.command == "bench":
        # Before TensorFlow starts, as benchmarks/run.py: the BFC allocator
        # keeps the statistics the peak-memory figures read.
        os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
    return quiet_import("keras_embed.tools.cli").run(args)


if __name__ == "__main__":
    sys.exit(main())
