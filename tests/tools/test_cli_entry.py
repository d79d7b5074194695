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
    assert "usage: keras-embed [-h] [--version] COMMAND" in result.stdout
    assert "tensorflow imported: False" in result.stdout
    result = run("inspect")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "keras-embed inspect: error: the following arguments are required: FILE")
    assert "tensorflow imported: False" in result.stdout


def test_version_without_tensorflow():
    result = run("--version")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.splitlines() == [f"keras-embed {keras_embed.__version__}",
                                          "tensorflow imported: False"]


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


# TensorFlow's lines as it writes them (TF 2.21, on CPU-only machines; the
# oneDNN line on CPUs without AVX-512): the start-up block twice, as TensorFlow
# and then the XLA library Keras loads print it.
STARTUP = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796649609.344212    2067 port.cc:153] oneDNN custom operations are on. "
    "You may see slightly different numerical results due to floating-point round-off errors "
    "from different computation orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`.\n"
    "I0000 00:00:1796649609.344526    2067 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.\n"
    "I0000 00:00:1796649609.387425    2067 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.\n"
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
    "with the appropriate compiler flags.\n"
)
NOTICES = STARTUP * 2 + (
    "E0000 00:00:1796649611.839908    2067 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n"
    "E0000 00:00:1765379112.131532    2231 mkl_util.h:1005] oneDNN supports DT_BOOL only on "
    "platforms with AVX-512. Falling back to the default Eigen-based implementation if present.\n"
    "E0000 00:00:1765379112.131532    2231 cuda_dnn.cc:8310] Unable to register cuDNN factory: "
    "Attempting to register factory for plugin cuDNN when one has already been registered\n"
)
# What TensorFlow writes that is not a notice: kept.
REAL = (
    "W0000 00:00:1796649612.442803    2067 type_inference.cc:340] Type inference failed. This "
    "indicates an invalid graph that escaped type checking.\n"
    "E0000 00:00:1796649612.5    2067 op_kernel.cc:1857] OP_REQUIRES failed at "
    "gather_op.cc:134 : INVALID_ARGUMENT: indices[1] = 12 is not in [0, 10)\n"
    "F0000 00:00:1796649612.6    2067 check.cc:12] Check failed: size >= 0\n"
)


def test_tensorflow_notices_are_dropped_and_its_errors_kept(tmp_path):
    # A stand-in `keras_embed.tools.cli` whose command writes to fd 2 as
    # TensorFlow's C++ does, all of it, interleaved with our own message.
    package = tmp_path / "keras_embed" / "tools"
    package.mkdir(parents=True)
    (tmp_path / "keras_embed" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text(
        "import os, sys\n"
        "def run(args):\n"
        f"    os.write(2, {NOTICES.encode()!r})\n"
        f"    os.write(2, {REAL.encode()!r})\n"
        "    print('keras-embed inspect: error: ours', file=sys.stderr)\n"
        f"    os.write(2, {(STARTUP + 'no newline at the end').encode()!r})\n"
        "    return 1\n")
    (tmp_path / "here.keras").write_text("x")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    result = subprocess.run([sys.executable, "-m", "keras_embed_cli", "inspect", "here.keras"],
                            capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == REAL + "keras-embed inspect: error: ours\nno newline at the end"


def test_notice_pattern_line_by_line():
    for line in NOTICES.splitlines():
        assert keras_embed_cli.TENSORFLOW_NOTICE.match(line), line
    for line in REAL.splitlines() + ["keras-embed demo: error: the fresh process could not reload x",
                                     "Traceback (most recent call last):",
                                     "ValueError: Invalid dtype: DT_BOOL"]:
        assert not keras_embed_cli.TENSORFLOW_NOTICE.match(line), line
