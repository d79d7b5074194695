"""The `keras-embed` console script's entry point: quick, and quiet.

This module stands outside the `keras_embed` package on purpose: importing
anything inside it runs `keras_embed/__init__.py`, which imports TensorFlow
(seconds) to register the layer with Keras. Here the command line is parsed
first, and `--help`, usage errors and missing files are answered without
TensorFlow. Only then is `keras_embed.tools.cli` imported and the command
run, with TensorFlow's C++ notices dropped from stderr
(`tensorflow_notices_dropped`): the start-up block it writes before it
reads `TF_CPP_MIN_LOG_LEVEL`, CUDA and cuInit lines on machines without a
GPU, oneDNN's fallback note on CPUs without AVX-512. Its real errors pass.
`TF_CPP_MIN_LOG_LEVEL` defaults to 2 in this process (errors only) unless
it is set. Library users' processes are untouched.

The commands themselves are in `keras_embed.tools.cli`; this module imports
only the standard library.

Example:

>>> import keras_embed_cli
>>> keras_embed_cli.main(["inspect", "no-such-model.keras"])
1
"""

import argparse
import contextlib
import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
import threading

PROG = "keras-embed"
# keras_embed.tools.benchmark.SECTIONS, written out: --help imports no TensorFlow.
BENCH_SECTIONS = ("lookup", "training", "optimizers", "bags", "dynamic")


def parser():
    """The `keras-embed` argument parser (standard library only)."""
    main_parser = argparse.ArgumentParser(
        prog=PROG,
        description="A drop-in keras.layers.Embedding for Keras 3: demo, "
        "saved-model inspection and conversion, benchmarks.",
    )
    main_parser.add_argument(
        "--version", action="version", version=f"{PROG} {version()}"
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


def version():
    """keras_embed's version, from the installed package's metadata (which
    pip writes from pyproject.toml), or "unknown" when it is not installed."""
    try:
        return importlib.metadata.version("keras-embed")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (keras-embed is not installed)"


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


# TensorFlow's C++ notices that no setting silences: the start-up block it
# writes before it reads TF_CPP_MIN_LOG_LEVEL (printed once by TensorFlow and
# again by the XLA library Keras loads), lines about the CUDA drivers and
# cuInit on machines without a GPU, and oneDNN's note that it falls back to
# Eigen for a dtype on CPUs without AVX-512. None is an error of the user's.
TENSORFLOW_NOTICE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: .* rebuild TensorFlow"
    r"|I\d{4} "  # Information, never an error.
    r"|[WE]\d{4} [^]]*\] (?:failed call to cuInit"
    r"|Could not find cuda drivers"
    r"|Unable to register cu(?:DNN|FFT|BLAS) factory"
    r"|oneDNN supports DT_\w+ only on platforms with AVX-512"
    r"|TF-TRT Warning: Could not find TensorRT)"
)


@contextlib.contextmanager
def tensorflow_notices_dropped():
    """Runs its block with TensorFlow's C++ notices dropped from stderr.

    TensorFlow's C++ writes to file descriptor 2 directly: for the block,
    descriptor 2 is a pipe, read line by line by a thread that copies to
    the real stderr every line but `TENSORFLOW_NOTICE`'s. Real errors,
    tracebacks and our own messages pass. If the block raises, the dropped
    lines are written too (a failed start may be explained by one).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    stderr = os.dup(2)
    reader, writer = os.pipe()
    os.dup2(writer, 2)
    os.close(writer)
    dropped = []
    thread = threading.Thread(
        target=_copy_lines, args=(reader, stderr, dropped), daemon=True
    )
    thread.start()
    try:
        yield
    except BaseException:
        _restore(stderr, thread)
        os.write(stderr, b"".join(dropped))
        raise
    else:
        _restore(stderr, thread)
    finally:
        os.close(stderr)


def _restore(stderr, thread):
    # Descriptor 2 back: the pipe's last writer closes, and the thread,
    # having copied every line, ends.
    sys.stderr.flush()
    os.dup2(stderr, 2)
    thread.join()


def _copy_lines(reader, stderr, dropped):
    pending = b""
    with os.fdopen(reader, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            _write_kept([line + b"\n" for line in lines], stderr, dropped)
    _write_kept([pending] if pending else [], stderr, dropped)


def _write_kept(lines, stderr, dropped):
    for line in lines:
        if TENSORFLOW_NOTICE.match(line.decode("utf-8", "replace")):
            dropped.append(line)
        else:
            while line:
                line = line[os.write(stderr, line):]


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
    with tensorflow_notices_dropped():
        return importlib.import_module("keras_embed.tools.cli").run(args)


if __name__ == "__main__":
    sys.exit(main())
