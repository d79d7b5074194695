"""What a SavedModel directory is, read from its files without running them.

Keras 2 (`tf.keras` before Keras 3, and `tf_keras`) saved a model with
`model.save("my_model")` as a TensorFlow SavedModel directory:

- `saved_model.pb`: TensorFlow's object graph and traced functions (code,
  which is never run here);
- `keras_metadata.pb`: one JSON record per Keras object, with the model's
  config and training config;
- `variables/variables.index` and `variables.data-*`: a TensorFlow
  checkpoint holding every variable's value.

`read(path)` checks the directory is such a model and returns what it holds;
any other directory (a plain `tf.Module` export, a Keras 3 `model.export()`,
a partial or damaged copy) raises `Keras2SavedModelError` saying which it
is and what to use instead.

Example:

>>> from keras_embed.saving.keras2 import directory as keras2_directory
>>> keras2_directory.is_saved_model("no_such_directory")
False
>>> keras2_directory.read("my_model").model_config["class_name"]  # doctest: +SKIP
'Sequential'
"""

import json
import os

# Keras 2's object identifiers (in saved_model.pb) for the models it saves.
MODEL_IDENTIFIERS = (
    "_tf_keras_sequential", "_tf_keras_network", "_tf_keras_model",
)
TFSMLAYER = "keras.layers.TFSMLayer(path, call_endpoint='serving_default')"


class Keras2SavedModelError(ValueError):
    """A directory that is not a Keras 2 SavedModel that can be read, or
    whose model cannot be rebuilt; the message names the directory."""


class Directory:
    """What `read` found in a Keras 2 SavedModel directory.

    Attributes:
        path: the directory.
        nodes: `{node_path: (identifier, metadata)}` from
            `keras_metadata.pb`; `node_path` is a tuple of object-graph names
            (`("root", "layer_with_weights-0")`), `metadata` a dict.
        model_config: the model's config (`{"class_name", "config"}`).
        training_config: its training config, or `None`.
        keras_version: the Keras version that wrote it (such as `"2.15.0"`).
        checkpoint: the path prefix of the variables checkpoint.
        meta_graph: saved_model.pb's `MetaGraphDef` (its object graph and
            functions), parsed, never run.
    """

    def __init__(self, path, nodes, checkpoint, meta_graph=None):
        self.path = path
        self.nodes = nodes
        self.checkpoint = checkpoint
        self.meta_graph = meta_graph
        root = nodes[("root",)][1]
        self.model_config = root["model_config"]
        self.training_config = root.get("training_config")
        self.keras_version = root.get("keras_version", "2")


def is_saved_model(path):
    """Whether `path` is a directory holding a `saved_model.pb` or a
    `keras_metadata.pb`: what `read` is for."""
    return os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, name))
        for name in ("saved_model.pb", "keras_metadata.pb")
    )


def read(path):
    """Checks `path` is a Keras 2 SavedModel directory and reads its Keras
    records.

    Args:
        path: a directory.

    Returns:
        A `Directory`.

    Raises:
        Keras2SavedModelError: if `path` is missing, is not a SavedModel
            directory, is a SavedModel of something other than a Keras 2
            model, or is incomplete or damaged.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise Keras2SavedModelError(f"{path}: no such file or directory")
    if not os.path.isdir(path):
        raise Keras2SavedModelError(f"{path}: not a directory")
    has = {
        name: os.path.exists(os.path.join(path, *name.split("/")))
        for name in ("saved_model.pb", "keras_metadata.pb", "variables",
                     "variables/variables.index")
    }
    if not has["saved_model.pb"]:
        if has["keras_metadata.pb"] or has["variables"]:
            raise Keras2SavedModelError(
                f"{path}: a partial copy of a SavedModel directory: "
                "saved_model.pb is missing. Copy the whole directory."
            )
        raise Keras2SavedModelError(
            f"{path}: not a SavedModel directory (it has no "
            "saved_model.pb); keras-embed reads Keras 2 SavedModel "
            "directories, .keras and .h5 files"
        )
    meta_graph = _saved_model_graph(path)
    root = meta_graph.object_graph_def.nodes[0]
    root_identifier = root.user_object.identifier if root.HasField("user_object") else ""
    root_children = [child.local_name for child in root.children]
    if root_identifier not in MODEL_IDENTIFIERS:
        raise Keras2SavedModelError(_not_keras2(path, root_identifier,
                                                root_children))
    if not has["keras_metadata.pb"]:
        raise Keras2SavedModelError(
            f"{path}: a Keras 2 SavedModel without its keras_metadata.pb, "
            "which holds the model's config: copy it from the original "
            "directory. Without it the directory can only be called, for "
            f"inference, with {TFSMLAYER}."
        )
    nodes = _metadata_nodes(path)
    root = nodes.get(("root",), (None, {}))[1]
    if "model_config" not in root:
        if root.get("is_graph_network") is False:
            raise Keras2SavedModelError(
                f"{path}: a subclassed Keras 2 model "
                f"({root.get('class_name', 'a keras.Model subclass')}): its "
                "layers are made by its Python code, which the directory "
                "does not hold as a config. Build the model with that code "
                "in Keras 3, or call the directory, for inference, with "
                f"{TFSMLAYER}."
            )
        raise Keras2SavedModelError(
            f"{path}: keras_metadata.pb is damaged: it has no model config"
        )
    if not has["variables/variables.index"]:
        raise Keras2SavedModelError(
            f"{path}: a partial copy of a SavedModel directory: "
            "variables/variables.index is missing, so the model's weights "
            "are not there. Copy the whole directory."
        )
    return Directory(path, nodes, os.path.join(path, "variables", "variables"), meta_graph)


def _saved_model_graph(path):
    """saved_model.pb's meta graph that holds the object graph. Parses the
    protocol buffer; runs none of its functions."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    if os.path.getsize(os.path.join(path, "saved_model.pb")) == 0:
        raise Keras2SavedModelError(
            f"{path}: saved_model.pb is empty (0 bytes): a damaged or "
            "incomplete copy of a SavedModel directory"
        )
    try:
        with open(os.path.join(path, "saved_model.pb"), "rb") as file:
            saved_model.ParseFromString(file.read())
    except (DecodeError, RuntimeWarning) as error:
        raise Keras2SavedModelError(
            f"{path}: saved_model.pb is damaged (it does not parse as a "
            f"SavedModel: {error}); was the copy cut short?"
        ) from None
    graphs = [g for g in saved_model.meta_graphs if g.object_graph_def.nodes]
    if not graphs:
        raise Keras2SavedModelError(
            f"{path}: saved_model.pb holds no object graph: a TensorFlow 1 "
            "SavedModel (or a damaged one), not a Keras 2 model; load it "
            "with tf.compat.v1.saved_model.load"
        )
    return graphs[0]


def _not_keras2(path, identifier, children):
    if "_all_variables" in children and "_misc_assets" in children:
        return (
            f"{path}: a SavedModel exported by Keras 3 (model.export()), "
            "for inference only: it holds no Keras model config to rebuild "
            f"from. Call it with {TFSMLAYER}, or convert the .keras file it "
            "was exported from."
        )
    if identifier.startswith("_tf_keras_"):
        return (
            f"{path}: a Keras 2 SavedModel of a single layer "
            f"({identifier}), not of a model; keras-embed converts models"
        )
    return (
        f"{path}: a SavedModel of a TensorFlow object that is not a Keras "
        f"model (a tf.Module; its root object is {identifier or 'untyped'}):"
        " it has no layers to rebuild. Load it with tf.saved_model.load(path)"
        f", or call it from Keras 3 with {TFSMLAYER}."
    )


def _metadata_nodes(path):
    file_name = os.path.join(path, "keras_metadata.pb")
    with open(file_name, "rb") as file:
        data = file.read()
    try:
        records = parse_saved_metadata(data)
        nodes = {}
        for record in records:
            node_path = tuple(record["node_path"].split("."))
            nodes[node_path] = (record["identifier"],
                                json.loads(record["metadata"]))
    except (ValueError, UnicodeDecodeError) as error:
        raise Keras2SavedModelError(
            f"{path}: keras_metadata.pb is damaged ({error}); was the copy "
            "cut short?"
        ) from None
    if ("root",) not in nodes:
        raise Keras2SavedModelError(
            f"{path}: keras_metadata.pb is damaged: it has no record of the "
            "model itself"
        )
    return nodes


def parse_saved_metadata(data):
    """The records of a `keras_metadata.pb` (a `SavedMetadata` message).

    Decodes the protocol buffer's wire format for its few fields
    (`nodes`: `node_id` = 2, `node_path` = 3, `identifier` = 4, `metadata`
    = 5), so that no copy of Keras 2's generated code is needed.

    Args:
        data: the file's bytes.

    Returns:
        A list of dicts with the keys `node_id`, `node_path`, `identifier`
        and `metadata` (a JSON string).

    Raises:
        ValueError: if `data` is not such a message.

    Example:

    >>> from keras_embed.saving.keras2 import directory as keras2_directory
    >>> keras2_directory.parse_saved_metadata(bytes([10, 6, 16, 3, 26, 2, 97, 98]))
    [{'node_id': 3, 'node_path': 'ab', 'identifier': '', 'metadata': ''}]
    """
    names = {2: "node_id", 3: "node_path", 4: "identifier", 5: "metadata"}
    records = []
    for field, value in _fields(data):
        if field != 1 or not isinstance(value, bytes):
            raise ValueError(f"unexpected field {field} in SavedMetadata")
        record = {"node_id": 0, "node_path": "", "identifier": "",
                  "metadata": ""}
        for inner, inner_value in _fields(value):
            if inner in names:
                if isinstance(inner_value, bytes):
                    inner_value = inner_value.decode("utf-8")
                record[names[inner]] = inner_value
        records.append(record)
    return records


def _fields(data):
    """`(field_number, value)` for each field of a protocol buffer message:
    an int for varints and fixed-size fields, bytes for the others."""
    position, end = 0, len(data)
    while position < end:
        key, position = _varint(data, position)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = _varint(data, position)
        elif wire_type == 2:
            length, position = _varint(data, position)
            if position + length > end:
                raise ValueError("a field runs past the end of the data")
            value = data[position:position + length]
            position += length
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            if position + size > end:
                raise ValueError("a field runs past the end of the data")
            value = int.from_bytes(data[position:position + size], "little")
            position += size
        else:
            raise ValueError(f"unknown protocol buffer wire type {wire_type}")
        if field == 0:
            raise ValueError("field number 0 in protocol buffer data")
        yield field, value


def _varint(data, position):
    result, shift = 0, 0
    while True:
        if position >= len(data):
            raise ValueError("the data ends inside a number")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise ValueError("a number longer than 64 bits")
