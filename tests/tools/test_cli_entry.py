"""The console script's entry point (keras_embed_cli): quick, and quiet.

Each command runs in a fresh Python process without TF_CPP_MIN_LOG_LEVEL, as
a user's shell runs `keras-embed`. That commands which import TensorFlow
(inspect, convert, demo) print none of its lines is checked in test_cli.py.
"""

import os
import subprocess
import sys

import pytest

import keras_embed
import keras_embed_cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Runs main(ARGV) and reports on stdout whether TensorFlow was imported.
PROBE = """\
import sys, keras_embed_cli
try:
    code = keras_embed_cli.main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print("tensorflow imported:", "tensorflow" in sys.modules)
sys.exit(code)
"""


def run(*args, probe=True):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    command = ([sys.executable, "-c", PROBE] if probe
               else [sys.executable, "-m", "keras_embed_cli"])
    return subprocess.run(command + list(args), capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)


def test_console_script_is_the_light_entry():
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as file:
        project = tomllib.load(file)
    assert project["project"]["scripts"]["keras-embed"] == "keras_embed_cli:main"
    assert "keras_embed_cli" in project["tool"]["setuptools"]["py-modules"]


def test_help_and_usage_errors_without_tensorflow():
    result = run("--help")
    assert result.returncode == 0 and result.stderr == ""
    assert "usage: keras-embed [-h] COMMAND" in result.stdout
    assert "tensorflow imported: False" in result.stdout
    result = run("inspect")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "keras-embed inspect: error: the following arguments are required: FILE")
    assert "tensorflow imported: False" in result.stdout


def test_missing_file_without_tensorflow(tmp_path):
    missing = str(tmp_path / "gone.keras")
    for command in (["inspect", missing], ["convert", missing, str(tmp_path / "o.keras")]):
        result = run(*command)
        assert result.returncode == 1
        assert result.stderr == f"keras-embed {command[0]}: error: {missing}: no such file\n"
        assert "tensorflow imported: False" in result.stdout
    result = run("demo", "--epochs", "0")
    assert (result.returncode, result.stderr) == (1, "keras-embed demo: error: --epochs must be at least 1\n")


def test_tensorflow_output_shown_when_its_import_fails(tmp_path):
    # A stand-in `keras_embed.tools.cli` that writes to fd 2 as TensorFlow's
    # C++ does, then fails: the captured lines are shown with the error.
    package = tmp_path / "keras_embed" / "tools"
    package.mkdir(parents=True)
    (tmp_path / "keras_embed" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text(
        "import os\nos.write(2, b'E0000 00:00 cuda_dnn.cc] Unable to register\\n')\n"
        "raise ImportError('libcudnn.so.9: cannot open shared object file')\n")
    (tmp_path / "here.keras").write_text("x")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    result = subprocess.run([sys.executable, "-m", "keras_embed_cli", "inspect", "here.keras"],
                            capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("E0000 00:00 cuda_dnn.cc] Unable to register\n")
    assert "ImportError: libcudnn.so.9: cannot open shared object file" in result.stderr


def test_quiet_import_returns_a_module_already_imported():
    assert keras_embed_cli.quiet_import("keras_embed") is keras_embed
