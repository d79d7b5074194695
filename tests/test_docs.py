"""The documentation's examples run as written, and the site builds.

What runs, in README.md and every page under docs/ (one test per page):

- Every block fenced ```python runs, in the page's order, each in a fresh
  namespace, all of a page's blocks in one temporary working folder (so a
  block may read a file an earlier block of the page wrote), with Keras's
  random seed set to 0 before each.
- A block fenced ```text title="Output" right after a ```python block is
  what that block prints: its standard output must match, with `...`
  standing for any text (doctest's ELLIPSIS) and trailing spaces ignored.
- A block fenced ```console holds `$ keras-embed ...` commands, each
  followed by what it prints; they run in-process (`keras_embed_cli.main`),
  in the page's folder, after the page's earlier ```python blocks, and their
  output is checked as above. Only `keras-embed` commands go in ```console
  blocks.
- Anything else (```bash, ```text without that title) is shown, not run:
  set-up commands, long runs, transcripts such as the demo's (whose lines
  tests/tools/test_cli.py checks), error messages.

Then: every public name has an API page, `mkdocs build --strict` builds the
site (skipped where the [docs] extra is not installed), and each API page of
the built site shows its name's signature and arguments.
"""

import contextlib
import doctest
import glob
import inspect
import io
import os
import re
import shlex
import subprocess
import sys

import keras
import pytest

import keras_embed
import keras_embed_cli
from keras_embed.saving.migration import MigrationWarning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
PAGES = ["README.md"] + sorted(
    os.path.relpath(path, ROOT)
    for path in glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True)
)
FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
OUTPUT_INFO = 'text title="Output"'
CHECKER = doctest.OutputChecker()


def _blocks(page):
    """(kind, body, line) for each fenced block of `page`."""
    with open(os.path.join(ROOT, page), encoding="utf-8") as file:
        text = file.read()
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        yield match.group("info").strip(), match.group("body"), line


def _check_output(expected, got, where):
    expected = "\n".join(line.rstrip() for line in expected.strip("\n").splitlines()) + "\n"
    got = "\n".join(line.rstrip() for line in got.strip("\n").splitlines()) + "\n"
    if not CHECKER.check_output(expected, got, doctest.ELLIPSIS):
        pytest.fail(f"{where}: the output shown is not what it prints.\n"
                    f"--- shown\n{expected}--- printed\n{got}")


def _run_console(body, where):
    """Runs each `$ keras-embed ...` line of a ```console block in-process."""
    commands = re.split(r"^\$ ", body, flags=re.M)
    assert commands[0] == "", f"{where}: a ```console block starts with '$ '"
    for command in commands[1:]:
        line, _, expected = command.partition("\n")
        argv = shlex.split(line)
        assert argv[0] == "keras-embed", f"{where}: only keras-embed commands run ({line})"
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                code = keras_embed_cli.main(argv[1:])
            except SystemExit as exit:  # argparse's --help and --version
                code = exit.code
        assert code == 0, f"{where}: `{line}` exited with status {code}"
        _check_output(expected, out.getvalue(), f"{where}: `{line}`")


def _has_examples(page):
    return any(info == "python" or info == "console" for info, _, _ in _blocks(page))


@pytest.mark.parametrize("page", [p for p in PAGES if _has_examples(p)])
def test_the_examples_run_and_print_what_is_shown(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that save files write them here
    blocks = list(_blocks(page))
    for index, (info, body, line) in enumerate(blocks):
        where = f"{page}, line {line}"
        if info == "python":
            keras.utils.set_random_seed(0)
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(body, f"{page}:{line}", "exec"), {"__name__": "docs_example"})
            following = blocks[index + 1] if index + 1 < len(blocks) else None
            if following is not None and following[0] == OUTPUT_INFO:
                _check_output(following[1], out.getvalue(), where)
        elif info == "console":
            _run_console(body, where)
        elif info == OUTPUT_INFO:
            previous = blocks[index - 1][0] if index else None
            assert previous == "python", f"{where}: an Output block follows a ```python block"


def public_names():
    """Every public name, by the path users import it from."""
    names = {f"keras_embed.{name}": getattr(keras_embed, name) for name in keras_embed.__all__}
    for module in (keras_embed.optimizers, keras_embed.callbacks):
        for name in module.__all__:
            names[f"{module.__name__}.{name}"] = getattr(module, name)
    for name, value in vars(keras_embed.pretrained).items():
        if (not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
                and value.__module__ == keras_embed.pretrained.__name__):
            names[f"keras_embed.pretrained.{name}"] = value
    names["keras_embed.saving.migration.MigrationWarning"] = MigrationWarning
    return names


def test_every_public_name_has_an_api_page():
    names = public_names()
    assert len(names) >= 24 and "keras_embed.pretrained.load_vectors" in names
    missing = [name for name in names if not os.path.isfile(os.path.join(DOCS, "api", f"{name}.md"))]
    assert not missing, f"public names without a page in docs/api/: {missing}"
    with open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8") as file:
        nav = file.read()
    assert not [name for name in names if f"api/{name}.md" not in nav], "a page not in mkdocs.yml's nav"
    for name in names:
        with open(os.path.join(DOCS, "api", f"{name}.md"), encoding="utf-8") as file:
            assert file.read().startswith(f"::: {name}\n"), f"docs/api/{name}.md renders {name}"


def test_user_pages_speak_of_using_the_package_not_of_building_it():
    """The project's own history (what was tried, the targets it set) is in
    docs/design.md and benchmarks/README.md."""
    words = re.compile(r"this session|issue [0-9]+|the issue's|floors? (met|missed)|NOT MET", re.I)
    for page in PAGES:
        if os.path.basename(page).startswith("design"):
            continue
        with open(os.path.join(ROOT, page), encoding="utf-8") as file:
            found = words.findall(file.read())
        assert not found, f"{page}: {found}"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built by `mkdocs build --strict` into a temporary folder."""
    for module in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python", "material"):
        try:
            __import__(module)
        except ImportError:
            pytest.skip("the [docs] extra is not installed: pip install -e '.[docs]'")
    folder = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(folder)],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return folder


def test_the_performance_plot_is_the_committed_baseline_run():
    """docs/images/benchmark.png is a copy (MkDocs serves only docs/)."""
    with open(os.path.join(DOCS, "images", "benchmark.png"), "rb") as copy, \
            open(os.path.join(ROOT, "benchmarks", "baseline", "benchmark.png"), "rb") as run:
        assert copy.read() == run.read(), "copy benchmarks/baseline/benchmark.png to docs/images/"


def test_the_site_builds_strictly(site):
    assert os.path.isfile(os.path.join(site, "index.html"))
    assert os.path.isfile(os.path.join(site, "demo_vectors.png"))


def _text(html):
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("&#39;", "'")


def _docstring_args(value):
    """The names the docstring's Args: section documents."""
    doc = inspect.getdoc(value) or ""
    block = re.search(r"^Args:\n((?:[ ]{4}.*\n|\n)*)", doc + "\n", re.M)
    return re.findall(r"^[ ]{4}(\*{0,2}\w+)( \(.*\))?:", block.group(1), re.M) if block else []


@pytest.mark.parametrize("name", sorted(public_names()))
def test_each_api_page_shows_its_signature_and_arguments(site, name):
    """The page has the name's heading, its signature with every named
    parameter, and an Args table with each argument its docstring documents
    (a docstring griffe cannot read leaves them out, or fails the build)."""
    with open(os.path.join(site, "api", f"{name}.html"), encoding="utf-8") as file:
        html = file.read()
    value = public_names()[name]
    assert f'id="{name}"' in html, f"{name}: no heading for it"
    if ">>>" in (inspect.getdoc(value) or ""):
        # The docstring's example, fenced as code (docs/hooks/doctest_fences.py),
        # not read as Markdown (where ">>>" starts a block quote).
        assert '<span class="gp">&gt;&gt;&gt; </span>' in html and "<blockquote>" not in html, f"{name}: example"
    if inspect.isclass(value) and issubclass(value, keras.layers.Layer):
        assert "Input shape" in html and "Output shape" in html, f"{name}: shapes"
    if inspect.ismodule(value):
        assert "doc-signature" not in html.split(f'id="{name}"', 1)[1].split("doc-section-title", 1)[0]
        return  # A module's page: its docstring and a table of its names.
    if inspect.isclass(value) and "__init__" not in vars(value):
        # A warning category and an abstract base: no constructor of their
        # own (Keras's Optimizer's, as **kwargs, for RowSparseOptimizer), so
        # no signature; the page shows their bases and docstring.
        assert value in (MigrationWarning, keras_embed.optimizers.RowSparseOptimizer), name
        assert "Bases:" in html
        named = []
    else:
        found = re.search(r'class="[^"]*doc-signature[^"]*">(.*?)</div>', html, re.S)
        assert found, f"{name}: no signature"
        signature = _text(found.group(1))
        short = name.rsplit(".", 1)[1]
        assert re.match(rf"\s*{short}\s*\(", signature), f"{name}: no signature: {signature[:200]}"
        named = [p.name for p in inspect.signature(value).parameters.values()
                 if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    for parameter in named:
        assert re.search(rf"\b{parameter}\b", signature), f"{name}: {parameter} not in its signature"
    documented = [arg for arg, _ in _docstring_args(value)]
    if value is keras_embed.pretrained.PretrainedVectors:
        # Made by load_vectors, not by users: documented by its Attributes.
        assert "Attributes:" in html and not documented
        return
    if not named and not documented:
        return  # Nothing to pass (MigrationWarning).
    assert documented, f"{name}: its docstring has no Args: section"
    assert 'doc-section-title">Parameters:' in html, f"{name}: no Args table"
    table = _text(html.split('doc-section-title">Parameters:', 1)[1].split("doc-section-title", 1)[0])
    for arg in documented:
        assert arg in table, f"{name}: argument {arg} not in the Args table"
