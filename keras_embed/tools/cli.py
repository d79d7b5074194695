"""The `keras-embed` command line (also `python -m keras_embed`).

Subcommands:

- `keras-embed demo`: what an embedding layer does, on data in the package,
  and a picture of the trained vectors (`demo_vectors.png`).
- `keras-embed inspect FILE`: a table of the embedding layers in a saved
  model (`.keras` or `.h5`).
- `keras-embed convert IN OUT [--to keras_embed|stock] [--force]`: rewrites
  a saved model with its embedding layers swapped.
- `keras-embed bench [--quick] [--sections ...] [--output DIR]`: the
  benchmark suite.

Errors (missing file, not a Keras model, no embedding layers, unsupported
format) print one line on stderr and exit with status 1, without a
traceback. Every subcommand has `--help`. The arguments are parsed, and
`--help`, usage errors and missing files answered, by `keras_embed_cli`
(the console script's entry, outside this package, so that they need no
TensorFlow); the commands run here.

Example:

>>> from keras_embed.tools import cli
>>> cli.main(["inspect", "model.keras"])     # doctest: +SKIP
0
"""

import contextlib
import json
import sys

import keras_embed_cli
from keras_embed_cli import PROG


class CommandError(Exception):
    """A user-facing error: printed as one line on stderr, exit status 1."""


def _demo(args):
    from keras_embed.tools import demo

    return demo.run(output_dir=args.output, epochs=args.epochs)


def _inspect(args):
    from keras_embed.saving import saved_models

    with _one_line(args.file):
        rows = saved_models.embedding_rows(args.file)
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

    with _one_line(args.input):
        lines = saved_models.convert(
            args.input, args.output, to=args.to, force=args.force
        )
    print("\n".join(lines))
    return 0


@contextlib.contextmanager
def _one_line(path):
    """Errors as one line naming `path`: ours say what went wrong already;
    others (Keras and TensorFlow raise many kinds, some with a page of
    text) are given by their reason."""
    from keras_embed.saving import load_errors
    from keras_embed.saving import saved_models

    try:
        yield
    except saved_models.SavedModelError as error:
        raise CommandError(str(error)) from None
    except Exception as error:
        raise CommandError(f"{path}: {load_errors.reason(error)}") from None


def _bench(args):
    from keras_embed.tools import benchmark

    benchmark.run(quick=args.quick, output=args.output, sections=args.sections)
    return 0


COMMANDS = {
    "demo": _demo,
    "inspect": _inspect,
    "convert": _convert,
    "bench": _bench,
}


def main(argv=None):
    """Runs `keras-embed` with `argv` (default: `sys.argv[1:]`), as the
    console script does (`keras_embed_cli.main`).

    Returns:
        The exit status: 0 on success, 1 on a user error, 2 on a usage error.
    """
    return keras_embed_cli.main(argv)


def run(args):
    """Runs the command of `args`, parsed by `keras_embed_cli.parser()` and
    checked by `keras_embed_cli.check`; returns the exit status."""
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
