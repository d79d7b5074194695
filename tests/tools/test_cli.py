"""The `keras-embed` command line, driven as a user drives it: commands run in
a subprocess through the console script's entry point, keras_embed_cli (exit
codes, output, files written, and no TensorFlow start-up line on stderr),
and the many error paths through `keras_embed.tools.cli.main` in this
process, which prints the same lines
without starting a Python process (and importing TensorFlow) for each."""

import hashlib
import os
import re
import shlex
import subprocess
import sys
import warnings
import zipfile

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_embed
from keras_embed.tools import cli
from keras_embed.saving import load_errors, saved_models
from conftest import FIXTURES

IDS = np.array([[3, 9, 1, 0, 0, 0], [28, 2, 7, 5, 1, 4]], "int32")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# TensorFlow's C++ start-up notices, which TF_CPP_MIN_LOG_LEVEL does not
# silence: `python -m keras_embed` imports the package, so TensorFlow, first.
TENSORFLOW_LOG = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages|To enable the following)")


def run(*args, module=False):
    """Runs `keras-embed ARGS` as the console script does (its entry point,
    `keras_embed_cli`), or `python -m keras_embed ARGS`. Without
    TF_CPP_MIN_LOG_LEVEL: the console script must be quiet on its own."""
    command = [sys.executable, "-m", "keras_embed" if module else "keras_embed_cli"]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    if module:
        env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.run(command + list(args), capture_output=True, text=True,
                          timeout=300, env=env)


def user_lines(stderr):
    """stderr without TensorFlow's own start-up lines (`python -m keras_embed`)."""
    return [line for line in stderr.splitlines() if line and not TENSORFLOW_LOG.match(line)]


def digest(path):
    with open(path, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Saved models and not-models, written once for the whole module."""
    directory = tmp_path_factory.mktemp("models")
    paths = {}

    def path(name):
        paths[name] = str(directory / name)
        return paths[name]

    keras.utils.set_random_seed(11)
    stock = keras.Sequential(
        [
            keras.Input(shape=(6,), dtype="int32"),
            keras.layers.Embedding(30, 4, mask_zero=True, name="words"),
            keras.layers.LSTM(3),
            keras.layers.Dense(1),
        ]
    )
    stock.compile(optimizer="adam", loss="mse")
    stock.fit(IDS, np.array([1.0, 0.0]), epochs=1, verbose=0)
    stock.save(path("stock.keras"))
    with open(paths["stock.keras"], "rb") as file:
        data = file.read()
    with open(path("cut.keras"), "wb") as file:
        file.write(data[: len(data) // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stock.save(path("stock.h5"))
    paths["stock_predictions"] = stock.predict(IDS, verbose=0)

    words = keras.Input(shape=(6,), dtype="int32")
    pool = keras.layers.GlobalAveragePooling1D
    features = keras.layers.Concatenate()(
        [
            pool()(keras.layers.ReversibleEmbedding(30, 4, name="rev")(words)),
            pool()(keras.layers.Embedding(1000, 16, dtype="mixed_float16", name="big")(words)),
        ]
    )
    keras.Model(words, keras.layers.Dense(1)(features)).save(path("mixed.keras"))

    ours = keras.Sequential(
        [keras_embed.Embedding(30, 4, input_length=6, name="fixed"), keras.layers.Flatten(), keras.layers.Dense(1)]
    )
    ours.save(path("ours.keras"))
    paths["ours_predictions"] = ours.predict(IDS, verbose=0)

    quantized = keras.Sequential(
        [keras.Input(shape=(6,), dtype="int32"), keras.layers.Embedding(1000, 64, name="table"), pool()]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized.quantize("int8")
    quantized.save(path("quantized.keras"))

    dense = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(2)])
    dense.save(path("dense.keras"))
    dense.save_weights(path("dense.weights.h5"))
    for name, text in (("text.keras", "hello"), ("text.h5", "hello"), ("notes.txt", "x")):
        with open(path(name), "w") as file:
            file.write(text)
    with zipfile.ZipFile(path("other.keras"), "w") as archive:
        archive.writestr("readme.txt", "not a model")
    with h5py.File(path("data.h5"), "w") as file:
        file["values"] = np.arange(3)
    os.makedirs(path("exported"))
    open(os.path.join(paths["exported"], "saved_model.pb"), "w").close()
    return paths


# Through a real subprocess, as a user runs it.


def test_help_lists_the_commands_and_runs_as_a_module():
    result = run("--help")
    assert result.returncode == 0
    for command in ("demo", "inspect", "convert", "bench"):
        assert re.search(rf"^    {command} ", result.stdout, re.M), result.stdout
    result = run("convert", "--help", module=True)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: keras-embed convert [-h] [--to {keras_embed,stock}] [--force] IN OUT")
    assert "never modifies IN" in result.stdout


def test_inspect_prints_a_table_of_the_embedding_layers(files):
    result = run("inspect", files["mixed.keras"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "name", "class", "input_dim", "output_dim", "mask_zero", "input_length",
        "params", "dtype", "quantization", "size", "(MB)",
    ]
    assert lines[1].split() == [
        "rev", "keras.layers.ReversibleEmbedding", "30", "4", "False", "-", "120", "float32", "-", "0.0005",
    ]
    # 1000 x 16 float32 variables (mixed_float16 computes in float16 but
    # stores float32): 64,000 bytes.
    assert lines[2].split() == [
        "big", "keras.layers.Embedding", "1000", "16", "False", "-", "16,000", "mixed_float16", "-", "0.06",
    ]
    assert lines[3] == "2 embedding layers, 16,120 params, 0.06 MB"
    assert result.stderr == ""  # Not one line of TensorFlow's.


def test_convert_to_keras_embed_writes_a_new_file_and_leaves_the_input(files, tmp_path):
    before = digest(files["stock.keras"])
    out = str(tmp_path / "converted.keras")
    result = run("convert", files["stock.keras"], out)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"Read {files['stock.keras']} (a Keras 3 model, 1 embedding layer)",
        "  words  keras.layers.Embedding -> keras_embed.Embedding",
        f"Wrote {out} ({os.path.getsize(out) / 1e6:.2f} MB)",
    ]
    assert digest(files["stock.keras"]) == before
    assert os.listdir(tmp_path) == ["converted.keras"]  # no temporary file left
    model = keras.models.load_model(out)
    assert type(model.get_layer("words")) is keras_embed.Embedding
    assert model.get_layer("words").mask_zero is True
    assert model.compiled and model.optimizer.built  # training state kept
    assert int(model.optimizer.iterations) == 1  # the one step fit took
    np.testing.assert_array_equal(model.predict(IDS, verbose=0), files["stock_predictions"])


def test_convert_to_stock_h5_reports_what_it_drops(files, tmp_path):
    out = str(tmp_path / "stock.h5")
    result = run("convert", files["ours.keras"], out, "--to", "stock", module=True)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:3] == [
        "  fixed  keras_embed.Embedding -> keras.layers.Embedding",
        "  note: unswap: layer 'fixed': input_length=6 dropped (keras.layers.Embedding has no such setting).",
    ]
    with h5py.File(out, "r") as file:
        assert '"class_name": "Embedding"' in file.attrs["model_config"]
        assert "keras_embed" not in file.attrs["model_config"]
    model = keras.models.load_model(out)
    assert type(model.get_layer("fixed")) is keras.layers.Embedding
    np.testing.assert_array_equal(model.predict(IDS, verbose=0), files["ours_predictions"])


def test_errors_are_one_line_on_stderr_without_a_traceback(files, tmp_path):
    missing = str(tmp_path / "missing.keras")
    result = run("inspect", missing)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"keras-embed inspect: error: {missing}: no such file\n"

    out = str(tmp_path / "taken.keras")
    with open(out, "w") as file:
        file.write("mine")
    result = run("convert", files["stock.keras"], out)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"keras-embed convert: error: {out} exists; use --force to overwrite it"
    ]
    assert open(out).read() == "mine"


def test_bench_quick_writes_its_results_and_plot(tmp_path):
    pytest.importorskip("matplotlib")  # The `bench` extra.
    # The two sections the plot draws (the others, in-process at tiny sizes:
    # tests/tools/test_benchmark.py and test_benchmark_optimizers.py).
    result = run("bench", "--quick", "--sections", "lookup", "training",
                 "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "Forward lookup" in result.stdout and "Training step" in result.stdout
    assert sorted(os.listdir(tmp_path)) == ["benchmark.json", "benchmark.md", "benchmark.png"]
    with open(tmp_path / "benchmark.png", "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"


def test_demo_runs_end_to_end(tmp_path):
    # Run as a user runs it, with the console script, from the folder that
    # holds a clone of the project named keras_embed/ (which a `python -c`
    # started there would import instead of the installed package).
    (tmp_path / "keras_embed" / "keras_embed").mkdir(parents=True)
    (tmp_path / "keras_embed" / "pyproject.toml").write_text("")
    output = tmp_path / "out"
    script = os.path.join(os.path.dirname(sys.executable), "keras-embed")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONPATH")}
    result = subprocess.run([script, "demo", "--output", "out", "--epochs", "3"], capture_output=True,
                            text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for text in (
        "1. Text to padded ids",
        "'This is a text'     -> [",
        "'This is not a text' -> [",
        "2. Ids to vectors",
        "output shape (2, 5, 8) = (sentences, ids, output_dim)",
        "     [[ True  True  True  True False]",
        "      [ True  True  True  True  True]]",
        "its rows are untrained: the initial values its initializer drew",
        "Epoch 3/3",
        "two sentences new to the model (in neither the training nor the held-out sentences)",
        "5. Reloading in a fresh Python process, without custom_objects",
        "loaded layer class: keras_embed.layers.embedding.Embedding",
        "predictions on the 60 held-out sentences: identical, bit for bit",
        "Summary",
    ):
        assert text in out, text
    # The padded ids: the first sentence is the second without 'not'.
    first, second = (
        [int(x) for x in re.search(rf"'{s}' *-> \[([\d, ]+)\]", out).group(1).split(",")]
        for s in ("This is a text", "This is not a text")
    )
    assert first == second[:2] + second[3:] + [0]
    model = keras.models.load_model(str(output / "demo_classifier.keras"))
    assert type(model.layers[0]) is keras_embed.Embedding
    assert model.layers[0].mask_zero is True
    assert user_lines(result.stderr) == []
    # The picture: a PNG of the size drawn (9 x 7 inches at 80 dpi).
    picture = output / "demo_vectors.png"
    assert f"wrote {picture}" in out and f"Picture of the trained vectors: {picture}" in out
    data = picture.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (720, 560)
    assert len(data) > 20_000  # Points and labels, not a blank canvas.
    # The reload command, run as printed.
    lines = out.splitlines()
    command = lines[lines.index("   as this command does (runnable as printed):") + 1].strip()
    reloaded = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=300,
                              env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=tmp_path)
    assert reloaded.returncode == 0, reloaded.stderr
    assert reloaded.stdout.strip() == "<class 'keras_embed.layers.embedding.Embedding'>"


# In this process: the same command line, every error path.


def main(capsys, *argv):
    """Runs `keras-embed ARGV` in this process: (exit code, stdout, stderr)."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exit:
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing.keras", "{path}: no such file"),
        ("exported", "{path}: saved_model.pb is empty (0 bytes): a damaged or incomplete copy "
         "of a SavedModel directory"),
        ("notes.txt", "{path}: unsupported format .txt; keras-embed reads .keras and .h5 files"),
        ("dense.weights.h5", "{path}: a weights-only file, with no model in it; load it with "
         "model.load_weights() into the model it came from"),
        ("text.keras", "{path}: it is not a zip archive, as a .keras file is (it starts with b'hello')"),
        ("cut.keras", "{path}: the file is cut short ({size:,} bytes): a .keras file is a zip archive, "
         "and this one has no zip directory at its end. Was it truncated (an interrupted copy or download)?"),
        ("other.keras", "{path}: the archive has no config.json"),
        ("text.h5", "{path}: it is not an HDF5 file (5 bytes), as a .h5 model file is"),
        ("data.h5", "{path}: not a Keras model (an HDF5 file with no model_config; weights only?)"),
        ("dense.keras", "{path}: the model has no embedding layers"),
    ],
)
def test_inspect_and_convert_errors(files, tmp_path, capsys, name, message):
    path = files.get(name, str(tmp_path / name))
    size = os.path.getsize(path) if os.path.isfile(path) else None
    for command, args in (("inspect", [path]), ("convert", [path, str(tmp_path / "out.keras")])):
        code, out, err = main(capsys, command, *args)
        assert code == 1
        assert out == ""
        assert err == f"keras-embed {command}: error: {message.format(path=path, size=size)}\n"
    assert not os.path.exists(tmp_path / "out.keras")


def test_a_file_keras_cannot_load_is_one_line(tmp_path, capsys):
    path = str(tmp_path / "unknown.keras")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", '{"class_name": "NoSuchModel", "config": {}}')
        archive.writestr("metadata.json", '{"keras_version": "3.15.1"}')
    code, out, err = main(capsys, "inspect", path)
    assert (code, out) == (1, "")
    assert err.startswith(f"keras-embed inspect: error: {path}: could not load the model: ")
    assert err.count("\n") == 1


def test_a_damaged_file_found_while_loading_is_named_once(files, capsys, monkeypatch):
    path = files["stock.keras"]

    def load_model(filepath, **kwargs):
        raise load_errors.DamagedModelFileError(f"Cannot load '{filepath}': the file is cut short.")

    monkeypatch.setattr(keras.models, "load_model", load_model)
    code, _, err = main(capsys, "inspect", path)
    assert (code, err) == (1, f"keras-embed inspect: error: Cannot load '{path}': the file is cut short.\n")


@pytest.mark.parametrize("command", ["convert", "inspect"])
def test_an_unforeseen_error_is_one_line_without_a_traceback(files, tmp_path, capsys, monkeypatch,
                                                              command):
    # Keras and TensorFlow raise many kinds of error, some with a page of text.
    def fail(*args, **kwargs):
        raise tf.errors.InvalidArgumentError(
            None, None, "keys and values cannot be empty tensors.\n\t [[{{node LookupTableImportV2}}]]")

    monkeypatch.setattr(saved_models.migration, "swap", fail)
    monkeypatch.setattr(saved_models, "_embedding_layers", fail)
    source = files["stock.keras"]
    arguments = [source, str(tmp_path / "out.keras")] if command == "convert" else [source]
    code, out, err = main(capsys, command, *arguments)
    assert (code, out) == (1, "")
    assert err == (f"keras-embed {command}: error: {source}: keys and values cannot be empty "
                   "tensors.\n")


def test_convert_names_a_bad_to_argument(files, tmp_path):
    with pytest.raises(ValueError, match="^to must be 'keras_embed' or 'stock', not 'Stock'$"):
        saved_models.convert(files["stock.keras"], str(tmp_path / "out.keras"), to="Stock")
    assert os.listdir(tmp_path) == []


def test_convert_refuses_bad_outputs(files, tmp_path, capsys):
    source = files["stock.keras"]
    cases = [
        ([source, source, "--force"],
         f"{source} is the input file; convert never changes its input, so give another output path"),
        ([source, str(tmp_path / "out.onnx")],
         f"{tmp_path / 'out.onnx'}: unsupported output format .onnx; use a .keras or .h5 path"),
        ([source, str(tmp_path / "no" / "out.keras")], f"{tmp_path / 'no'}: no such directory"),
    ]
    for args, message in cases:
        code, _, err = main(capsys, "convert", *args)
        assert (code, err) == (1, f"keras-embed convert: error: {message}\n")
    assert os.listdir(tmp_path) == []


def test_convert_force_overwrites_with_a_plain_file(files, tmp_path, capsys):
    out = tmp_path / "out.h5"
    out.write_text("old")
    code, stdout, _ = main(capsys, "convert", files["stock.keras"], str(out), "--force")
    assert code == 0
    assert stdout.splitlines()[-1].startswith(f"Wrote {out} (")
    # Keras 3 writes loss="mse" to .h5 in a form it cannot read back.
    assert stdout.splitlines()[-2] == (
        "  note: Keras 3 cannot read back the training configuration (loss, optimizer) it "
        "writes to .h5 for this model (Could not deserialize 'keras.metrics.mse' because it "
        "is not a KerasSaveable subclass), so it is left out; save as .keras to keep it"
    )
    assert h5py.is_hdf5(out)
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~umask
    model = keras.models.load_model(str(out))
    assert type(model.get_layer("words")) is keras_embed.Embedding
    np.testing.assert_array_equal(model.predict(IDS, verbose=0), files["stock_predictions"])


def test_convert_a_failed_save_leaves_nothing_behind(files, tmp_path, capsys, monkeypatch):
    def save(model, path, **kwargs):
        with open(path, "w") as file:
            file.write("half written")
        raise OSError("No space left on device")

    monkeypatch.setattr(keras.Model, "save", save)
    out = tmp_path / "out.keras"
    code, _, err = main(capsys, "convert", files["stock.keras"], str(out))
    assert code == 1
    assert err == f"keras-embed convert: error: {out}: could not save the model: No space left on device\n"
    assert os.listdir(tmp_path) == []


@pytest.mark.cross_kernel
def test_convert_a_keras2_h5_file(files, tmp_path, capsys):
    """tf-keras's IMDB-style model: its input_length is kept, and its LSTM
    (whose Keras 2 config Keras 3 rejects) loads."""
    source = os.path.join(FIXTURES, "keras2_sequential_mask_zero_lstm.h5")
    expected = np.load(os.path.join(FIXTURES, "keras2_sequential_mask_zero_lstm.npz"))
    out = str(tmp_path / "from_keras2.keras")
    code, stdout, _ = main(capsys, "convert", source, out)
    assert code == 0
    assert stdout.splitlines()[:2] == [
        f"Read {source} (a Keras 2 model, 1 embedding layer)",
        "  embedding  Embedding (Keras 2) -> keras_embed.Embedding",
    ]
    model = keras.models.load_model(out)
    layer = model.get_layer("embedding")
    assert (type(layer), layer.input_length, layer.mask_zero) == (keras_embed.Embedding, 7, True)
    np.testing.assert_array_equal(layer.get_weights()[0], expected["embedding_weights"])
    # Stored by tf-keras on another machine: float32 sums (an LSTM over 7
    # steps, then Dense, terms about 0.5) round differently in another CPU's
    # kernels. rtol: a few ulps of each output; atol: about 8 ulps of terms
    # about 1, for outputs near 0 (TF 2.16.2-2.19.1 put one 2e-8 from
    # tf-keras's, 4e-6 relative).
    np.testing.assert_allclose(model.predict(expected["ids"], verbose=0), expected["expected"],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.cross_kernel
def test_convert_a_trained_keras2_h5_file_keeps_its_training(tmp_path, capsys):
    """tf-keras's Adam(0.05, beta_1=0.8, epsilon=1e-5), loss "mse", metric
    "mae", after 3 steps: Keras 3's reader makes a default Adam of it (lr
    0.001) and fails on the loss's name; convert keeps every setting and the
    optimizer's step count and slots, so that training goes on as it would
    have in Keras 2."""
    source = os.path.join(FIXTURES, "keras2_trained_adam.h5")
    saved = np.load(os.path.join(FIXTURES, "keras2_trained_adam.npz"))
    out = str(tmp_path / "trained.keras")
    code, stdout, _ = main(capsys, "convert", source, out)
    assert code == 0, stdout
    assert "note:" not in stdout
    model = keras.models.load_model(out)
    optimizer = model.optimizer
    assert type(optimizer) is keras.optimizers.Adam
    assert (float(optimizer.learning_rate), optimizer.beta_1, optimizer.epsilon) == (
        pytest.approx(0.05), 0.8, 1e-5)
    assert model.loss == "mse"
    assert int(optimizer.iterations) == int(saved["optimizer/iteration"]) == 3
    for variable in model.trainable_variables:
        index = optimizer._get_variable_index(variable)
        path = variable.path.removeprefix("sequential/")  # Keras 2 names: "dense/kernel"
        np.testing.assert_array_equal(
            optimizer._momentums[index], saved[f"optimizer/Adam/m/{path}"])
        np.testing.assert_array_equal(
            optimizer._velocities[index], saved[f"optimizer/Adam/v/{path}"])
    # Stored by tf-keras on another machine, through Dense layers (already
    # 1.2e-7 off here): a few ulps of each output, and of terms about 1 near 0.
    np.testing.assert_allclose(model.predict(saved["ids"], verbose=0), saved["expected"],
                               rtol=1e-5, atol=1e-6)
    assert set(model.evaluate(saved["ids"], saved["expected"], return_dict=True, verbose=0)) \
        == {"loss", "mae"}


def test_inspect_numbers(files, capsys):
    code, out, _ = main(capsys, "inspect", files["quantized.keras"])
    assert code == 0
    # int8 table 1000 x 64 (64,000 bytes) and a float32 scale per row (4,000).
    assert out.splitlines()[1].split() == [
        "table", "keras.layers.Embedding", "1000", "64", "False", "-", "65,000",
        "int8_from_float32", "int8", "0.07",
    ]
    code, out, _ = main(capsys, "inspect", os.path.join(FIXTURES, "keras2_functional_tuple_length.h5"))
    assert code == 0
    assert out.splitlines()[1].split() == [
        "embedding", "Embedding", "(Keras", "2)", "30", "2", "False", "[3,4]", "60", "float32", "-", "0.0002",
    ]
    code, out, _ = main(capsys, "inspect", files["ours.keras"])
    assert out.splitlines()[1].split()[:6] == ["fixed", "keras_embed.Embedding", "30", "4", "False", "6"]


def test_every_command_has_help(capsys):
    for command, option in (("demo", "--output DIR"), ("inspect", "FILE"),
                            ("convert", "--force"), ("bench", "--quick")):
        code, out, _ = main(capsys, command, "--help")
        assert code == 0
        assert out.startswith(f"usage: keras-embed {command} ")
        assert option in out


def test_usage_errors(capsys):
    code, _, err = main(capsys)
    assert code == 2
    assert "keras-embed: error: the following arguments are required: COMMAND" in err
    code, _, err = main(capsys, "inspect", "a.keras", "--bogus")
    assert (code, err.splitlines()[-1]) == (2, "keras-embed: error: unrecognized arguments: --bogus")
    code, _, err = main(capsys, "bench", "--repeats", "2")
    assert (code, err.splitlines()[-1]) == (2, "keras-embed: error: unrecognized arguments: --repeats 2")
    code, _, err = main(capsys, "demo", "--epochs", "0")
    assert (code, err) == (1, "keras-embed demo: error: --epochs must be at least 1\n")
    code, _, err = main(capsys, "bench", "--sections", "lookups")
    last = err.splitlines()[-1]  # (whether argparse quotes the choices depends on the Python)
    assert code == 2 and last.startswith(
        "keras-embed bench: error: argument --sections: invalid choice: 'lookups' (choose from")
    assert all(section in last for section in ("lookup", "training", "optimizers", "bags"))


def test_bench_sections_are_the_harness_sections():
    import keras_embed_cli
    from keras_embed.tools import benchmark

    assert keras_embed_cli.BENCH_SECTIONS == benchmark.SECTIONS


def test_bench_without_matplotlib(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err = main(capsys, "bench", "--quick")
    assert (code, err) == (
        1,
        "keras-embed bench: error: the benchmark suite draws its plot with matplotlib, "
        "which is not installed: pip install 'keras-embed[bench]'\n",
    )


def test_inspect_and_convert_count_embedding_bags(tmp_path, capsys):
    # EmbeddingBag holds a table too: inspect listed none, and convert
    # refused a model with only bags ("the model has no embedding layers").
    genres = keras.Input((3,), dtype="int32")
    only_bags = keras.Model(genres, keras.layers.Dense(1)(
        keras_embed.EmbeddingBag(20, 4, mask_zero=True, name="genres")(genres)))
    source = str(tmp_path / "bags.keras")
    only_bags.save(source)
    code, out, err = main(capsys, "inspect", source)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[1].split()[:5] == ["genres", "keras_embed.EmbeddingBag", "20", "4", "True"]
    assert lines[-1] == "1 embedding layer, 80 params, 0.0003 MB"
    code, out, err = main(capsys, "convert", source, str(tmp_path / "out.keras"))
    assert (code, err) == (0, "")
    assert "  genres  keras_embed.EmbeddingBag (unchanged)" in out.splitlines()
    converted = keras.models.load_model(str(tmp_path / "out.keras"))
    assert type(converted.get_layer("genres")) is keras_embed.EmbeddingBag


def test_convert_keeps_the_training_of_a_mixed_float16_keras_file(tmp_path, capsys, policy):
    # Keras wraps the optimizer at compile under the mixed_float16 global
    # policy, and the file keeps the inner one: read under float32 (as the
    # command line runs), Keras dropped its state, "Skipping variable loading".
    policy("mixed_float16")
    model = keras.Sequential([keras.Input((6,), dtype="int32"), keras.layers.Embedding(30, 4),
                              keras.layers.Flatten(), keras.layers.Dense(1, dtype="float32")])
    model.compile("adam", "mse")
    model.fit(IDS, np.ones((2, 1)), epochs=3, verbose=0)
    source, out = str(tmp_path / "mixed.keras"), str(tmp_path / "out.keras")
    model.save(source)
    policy("float32")
    code, stdout, err = main(capsys, "convert", source, out)
    assert (code, err) == (0, ""), stdout
    policy("mixed_float16")  # As Keras needs, to load such a model with its optimizer.
    converted = keras.models.load_model(out)
    assert type(converted.optimizer) is keras.optimizers.LossScaleOptimizer
    assert int(converted.optimizer.iterations) == 3
    for new, old in zip(converted.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
