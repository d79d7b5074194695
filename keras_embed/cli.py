"""The `keras-embed` command line (also `python -m keras_embed`).

Subcommands:

- `keras-embed demo`: what an embedding layer does, on data in the package.
- `keras-embed inspect FILE`: a table of the embedding layers in a saved
  model (`.keras` or `.h5`).
- `keras-embed convert IN OUT [--to keras_embed|stock] [--force]`: rewrites
  a saved model with its embedding layers swapped.
- `keras-embed bench [--quick] [--output DIR]`: the benchmark suite.

Errors (missing file, not a Keras model, no embedding layers, unsupported
format) print one line on stderr and exit with status 1, without a
traceback. Every subcommand has `--help`.

Example:

>>> from keras_embed import cli
>>> cli.main(["inspect", "model.keras"])     # doctest: +SKIP
0
"""

import argparse
import os
import sys

PROG = "keras-embed"


class CommandError(Exception):
    """A user-facing error: printed as one line on stderr, exit status 1."""


def _parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="A drop-in keras.layers.Embedding for Keras 3: demo, "
        "saved-model inspection and conversion, benchmarks.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    demo = commands.add_parser(
        "demo",
        help="what an embedding layer does: ids, table rows, mask, a small "
        "text classifier trained, saved and reloaded",
        description="Turns 'This is a text' and 'This is not a text' into "
        "padded ids, shows the table rows they select and the mask, trains a "
        "small text classifier on the labelled sentences shipped in the "
        "package, saves it as .keras, reloads it in a fresh process without "
        "custom_objects and checks the predictions are identical. No network.",
    )
    demo.add_argument(
        "--output", metavar="DIR",
        help="keep the saved model in DIR (default: a temporary directory, "
        "removed at the end)",
    )
    demo.add_argument(
        "--epochs", type=int, default=12, metavar="N",
        help="training epochs (default: 12)",
    )

    inspect = commands.add_parser(
        "inspect",
        help="a table of the embedding layers in a .keras or .h5 file",
        description="Prints a table of the embedding layers in a saved model "
        "(.keras or .h5): name, class, input_dim, output_dim, mask_zero, "
        "input_length, params, dtype, quantization, size in MB.",
    )
    inspect.add_argument("file", metavar="FILE", help="a .keras or .h5 file")

    convert = commands.add_parser(
        "convert",
        help="rewrite a saved model with its embedding layers swapped",
        description="Loads IN, replaces its keras.layers.Embedding layers by "
        "keras_embed.Embedding (--to keras_embed, the default) or the "
        "reverse (--to stock), and saves the result as OUT (.keras or .h5, "
        "by its extension). Writes a temporary file next to OUT and renames "
        "it; never modifies IN.",
    )
    convert.add_argument("input", metavar="IN", help="a .keras or .h5 file")
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
        help="run the benchmark suite and write its plot",
        description="Runs the benchmark suite (keras_embed.benchmark) and "
        "writes its results and plot. Options, and any others the suite "
        "takes, are passed on to it.",
    )
    bench.add_argument(
        "--quick", action="store_true", help="a short run with small sizes"
    )
    bench.add_argument(
        "--output", metavar="DIR", help="where to write results and the plot"
    )
    return parser


def _demo(args):
    from keras_embed import demo

    if args.epochs < 1:
        raise CommandError("--epochs must be at least 1")
    return demo.run(output_dir=args.output, epochs=args.epochs)


def _inspect(args):
    from keras_embed import saved_models

    try:
        rows = saved_models.embedding_rows(args.file)
    except saved_models.SavedModelError as error:
        raise CommandError(str(error)) from None
    print(saved_models.format_table(rows))
    return 0


def _convert(args):
    from keras_embed import saved_models

    try:
        lines = saved_models.convert(
            args.input, args.output, to=args.to, force=args.force
        )
    except saved_models.SavedModelError as error:
        raise CommandError(str(error)) from None
    print("\n".join(lines))
    return 0


def _bench(args):
    try:
        from keras_embed import benchmark
    except ImportError as error:
        raise CommandError(
            f"the benchmark suite is not available: {error}"
        ) from None
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise CommandError(
            "the benchmark suite draws its plot with matplotlib, which is not "
            "installed: pip install 'keras-embed[bench]'"
        )
    forwarded = []
    if args.quick:
        forwarded.append("--quick")
    if args.output is not None:
        forwarded += ["--output", args.output]
    status = benchmark.main(forwarded + args.passed_on)
    return 0 if status is None else status


COMMANDS = {
    "demo": _demo,
    "inspect": _inspect,
    "convert": _convert,
    "bench": _bench,
}


def main(argv=None):
    """Runs `keras-embed` with `argv` (default: `sys.argv[1:]`).

    Returns:
        The exit status: 0 on success, 1 on a user error, 2 on a usage error.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.passed_on = unknown
    try:
        return COMMANDS[args.command](args)
    except CommandError as error:
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
