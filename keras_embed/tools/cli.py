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
traceback; TensorFlow's own start-up notices, which it prints as it is
imported, may precede it. Every subcommand has `--help`.

Example:

>>> from keras_embed.tools import cli
>>> cli.main(["inspect", "model.keras"])     # doctest: +SKIP
0
"""

import argparse
import json
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
        description="Runs the benchmark suite (keras_embed.tools.benchmark) and "
        "writes its results and plot.",
    )
    bench.add_argument(
        "--quick", action="store_true", help="a short run with small sizes"
    )
    bench.add_argument(
        "--output", metavar="DIR", default=os.path.join("benchmarks", "results"),
        help="folder for benchmark.json, .md and .png (default: %(default)s)",
    )
    return parser


def _demo(args):
    from keras_embed.tools import demo

    if args.epochs < 1:
        raise CommandError("--epochs must be at least 1")
    return demo.run(output_dir=args.output, epochs=args.epochs)


def _inspect(args):
    from keras_embed.saving import saved_models

    try:
        rows = saved_models.embedding_rows(args.file)
    except saved_models.SavedModelError as error:
        raise CommandError(str(error)) from None
    print(format_table(rows))
    return 0


def format_table(rows):
    """The rows of `saved_models.embedding_rows` as an aligned text table
    with a total."""
    from keras_embed.saving import saved_models

    columns = saved_models.COLUMNS
    header = [c.replace("size_mb", "size (MB)") for c in columns]
    body = [[_cell(column, row[column]) for column in columns] for row in rows]
    widths = [max(len(line[i]) for line in [header] + body)
              for i in range(len(columns))]
    numeric = {"input_dim", "output_dim", "params", "size_mb"}
    lines = []
    for line in [header] + body:
        cells = [
            cell.rjust(width) if column in numeric else cell.ljust(width)
            for column, cell, width in zip(columns, line, widths)
        ]
        lines.append("  ".join(cells).rstrip())
    total_params = sum(row["params"] for row in rows)
    total_mb = sum(row["size_mb"] for row in rows)
    count = len(rows)
    lines.append(
        f"{count} embedding layer{'s' * (count != 1)}, {total_params:,} "
        f"params, {saved_models.format_megabytes(total_mb)} MB"
    )
    return "\n".join(lines)


def _cell(column, value):
    from keras_embed.saving import saved_models

    if value is None:
        return "-"
    if column == "size_mb":
        return saved_models.format_megabytes(value)
    if column == "params":
        return f"{value:,}"
    if column == "input_length" and isinstance(value, tuple):
        return json.dumps(list(value)).replace(" ", "")
    return str(value)


def _convert(args):
    from keras_embed.saving import saved_models

    try:
        lines = saved_models.convert(
            args.input, args.output, to=args.to, force=args.force
        )
    except saved_models.SavedModelError as error:
        raise CommandError(str(error)) from None
    print("\n".join(lines))
    return 0


def _bench(args):
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise CommandError(
            "the benchmark suite draws its plot with matplotlib, which is not "
            "installed: pip install 'keras-embed[bench]'"
        )
    from keras_embed.tools import benchmark

    benchmark.run(quick=args.quick, output=args.output)
    return 0


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
    args = _parser().parse_args(argv)
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
