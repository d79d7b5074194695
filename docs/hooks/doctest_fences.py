"""A griffe extension for the API reference: docstring examples in Keras's
style (`Example:`, a blank line, then `>>>` lines at the docstring's own
indentation) are fenced as ```pycon blocks.

Griffe's Google parser makes a section only of indented lines, so such
examples would reach Markdown as text, where `>>>` starts a block quote. Each
run of lines from a `>>>` line to the next blank line (its `...` lines and
its output included) is fenced; examples already fenced are left alone. The
docstrings themselves are not changed: they stay doctests
(`pytest --doctest-modules`).
"""

import griffe


def fence_doctests(text):
    """`text` with every run of doctest lines wrapped in a ```pycon fence."""
    out, in_fence, in_run, indent = [], False, False, ""
    for line in text.splitlines():
        stripped = line.lstrip()
        if in_run and not stripped:
            out.append(indent + "```")
            in_run = False
        if not in_run and stripped.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and not in_run and stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            out.append(indent + "```pycon")
            in_run = True
        out.append(line)
    if in_run:
        out.append(indent + "```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fences the doctest examples of every docstring griffe loads."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
