"""Refusing ONNX models whose tensors live in other files ("external data").

An ONNX tensor may say ``data_location: EXTERNAL`` with a ``location`` path;
ONNX Runtime then reads that file when it builds the session (relative to the
model's folder, or to the *working directory* when the model is loaded from
bytes, as the runtime does). A model whose weight points at ``README.md`` or
``/etc/passwd`` thus turns ``/predict`` into a file reader, and the artifact's
sha256 covers only the graph, never the file it points at. Every model this
project ships is one self-contained file (``torch.onnx.export(...,
external_data=False)``), so the rule is simple: any external tensor is refused,
at export, at promotion and at load, by :func:`check_self_contained`.

Standard library only (the slim edge runtime has no ``onnx`` package): the
protobuf wire format is walked directly, visiting every place a tensor can sit
(graph initializers, sparse initializers, tensors in node attributes, nested
subgraphs of ``If``/``Loop``/``Scan``, functions and training graphs). Field
numbers are those of ``onnx.proto`` (stable since ONNX 1.0; the tests check
them against the ``onnx`` package).
"""

from __future__ import annotations

from dataclasses import dataclass

from selection.errors import IntegrityError

# Wire types of the protobuf encoding.
_VARINT, _I64, _LEN, _GROUP_START, _GROUP_END, _I32 = 0, 1, 2, 3, 4, 5
#: ``TensorProto.DataLocation.EXTERNAL``.
_EXTERNAL = 1
#: Deeper nesting than this is not a model anyone exported; refusing it also bounds recursion.
_MAX_DEPTH = 64

# Field numbers (onnx.proto) of the messages that can hold tensors.
_MODEL_GRAPH, _MODEL_TRAINING, _MODEL_FUNCTIONS = 7, 20, 25
_TRAINING_GRAPHS = (1, 2)  # initialization, algorithm
_GRAPH_NODE, _GRAPH_INIT, _GRAPH_SPARSE_INIT = 1, 5, 15
_FUNCTION_NODE, _FUNCTION_ATTRIBUTE = 7, 11
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_NAME, _TENSOR_EXTERNAL, _TENSOR_LOCATION = 8, 13, 14
_ENTRY_KEY, _ENTRY_VALUE = 1, 2


class ExternalDataError(IntegrityError):
    """A model refers to tensor data outside its own bytes; it is never loaded."""


@dataclass(frozen=True)
class ExternalTensor:
    """One tensor whose data lives elsewhere: its name and the file it names (if any)."""

    name: str
    location: str | None


class _NotProtobuf(Exception):
    """The bytes are not a protobuf message (so no ONNX Runtime could load them either)."""


class _TooDeep(_NotProtobuf):
    """Messages nest deeper than ``_MAX_DEPTH``: the walk stops, so it cannot vouch for the rest.

    Protobuf itself parses much deeper (ONNX Runtime loads a model with dozens
    of nested ``If`` subgraphs), so this is *not* "nobody can load it".
    """


def external_tensors(model: bytes, what: str = "the model") -> list[ExternalTensor]:
    """Every tensor in the serialized ModelProto ``model`` that points at external data.

    Bytes that are not a protobuf message at all give ``[]``: ONNX Runtime
    cannot parse them either, so it can read no file through them (loading
    such bytes fails on its own). A tensor counts as external when it says
    ``data_location: EXTERNAL`` or carries ``external_data`` entries.
    ExternalDataError if messages nest deeper than ``_MAX_DEPTH`` levels: the
    walk cannot see below that, and ONNX Runtime would still load it, so
    "none found" would be a guess.
    """
    found: list[ExternalTensor] = []
    try:
        _walk_message(memoryview(model), _MODEL_FIELDS, found, 0)
    except _TooDeep:
        raise ExternalDataError(_too_deep_message(what)) from None
    except _NotProtobuf:
        return []
    return found


def check_self_contained(model: bytes, what: str) -> None:
    """Raise ExternalDataError (one line: the rule, the tensor, the fix) if ``model`` has external data.

    ``what`` names the model in the message, e.g. ``"artifact 0123abcd..."``.
    Also refused: messages nested deeper than ``_MAX_DEPTH`` levels, which
    the walk cannot see below (ONNX Runtime loads them; "found none" must never
    mean "did not look"). Bytes that are no protobuf message pass, as in
    :func:`external_tensors`: the walk rejects exactly what protobuf's parser
    rejects (tag 0, truncation, bad wire types, unmatched groups), so ONNX
    Runtime cannot load them and reads no file through them.
    """
    found = external_tensors(model, what)
    if not found:
        return
    first = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    raise ExternalDataError(
        f"{what} must be a self-contained ONNX model: tensors whose data live in other files "
        "are refused, because loading them would read those files; tensor "
        f"{first.name!r} points at {first.location!r}{more}; re-export it as one file "
        "(torch.onnx.export(..., external_data=False), or onnx.save_model("
        "..., save_as_external_data=False)) and promote that"
    )


def _too_deep_message(what: str) -> str:
    return (f"{what} must nest at most {_MAX_DEPTH} levels of messages (subgraphs of "
            "If/Loop/Scan, functions) to be checked for tensors stored in other files; it nests "
            "deeper, so it is refused unchecked; flatten its control flow and re-export it as "
            "one file")


# -- the wire walk --------------------------------------------------------------------------

def _fields(data: memoryview) -> list[tuple[int, int, memoryview | int]]:
    """(field number, wire type, value) of every field of one message."""
    out: list[tuple[int, int, memoryview | int]] = []
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _NotProtobuf
        if wire == _VARINT:
            value, pos = _varint(data, pos)
            out.append((number, wire, value))
        elif wire == _LEN:
            length, pos = _varint(data, pos)
            if pos + length > end:
                raise _NotProtobuf
            out.append((number, wire, data[pos:pos + length]))
            pos += length
        elif wire == _I64:
            pos += 8
        elif wire == _I32:
            pos += 4
        elif wire == _GROUP_START:
            pos = _skip_group(data, pos, number)
        else:  # a lone group end, or wire types 6 and 7 that do not exist
            raise _NotProtobuf
        if pos > end:
            raise _NotProtobuf
    return out


def _skip_group(data: memoryview, pos: int, number: int) -> int:
    """Position after the end-group tag of group ``number`` (groups are legal, if obsolete)."""
    depth = 1
    while depth:
        if pos >= len(data):
            raise _NotProtobuf
        key, pos = _varint(data, pos)
        wire = key & 7
        if wire == _VARINT:
            pos = _varint(data, pos)[1]
        elif wire == _LEN:
            length, pos = _varint(data, pos)
            pos += length
        elif wire == _I64:
            pos += 8
        elif wire == _I32:
            pos += 4
        elif wire == _GROUP_START:
            depth += 1
        elif wire == _GROUP_END:
            depth -= 1
        else:
            raise _NotProtobuf
    if (key >> 3) != number:
        raise _NotProtobuf
    return pos


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _NotProtobuf
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _walk_message(data: memoryview, kinds: dict[int, str], found: list[ExternalTensor],
                  depth: int) -> None:
    """Visit the sub-messages of one message that can hold tensors (``kinds``: field -> kind)."""
    if depth > _MAX_DEPTH:
        raise _TooDeep
    for number, wire, value in _fields(data):
        kind = kinds.get(number)
        if kind is None or wire != _LEN:
            continue
        assert isinstance(value, memoryview)
        if kind == "tensor":
            _check_tensor(value, found)
        else:
            _walk_message(value, _KINDS[kind], found, depth + 1)


def _check_tensor(data: memoryview, found: list[ExternalTensor]) -> None:
    name, location, external, entries = "", None, False, False
    for number, wire, value in _fields(data):
        if number == _TENSOR_NAME and wire == _LEN:
            name = bytes(value).decode("utf-8", "replace")
        elif number == _TENSOR_LOCATION and wire == _VARINT:
            external = external or value == _EXTERNAL
        elif number == _TENSOR_EXTERNAL and wire == _LEN:
            entries = True
            entry = {n: v for n, _, v in _fields(value)}  # type: ignore[arg-type]
            key = entry.get(_ENTRY_KEY)
            if isinstance(key, memoryview) and bytes(key) == b"location":
                raw = entry.get(_ENTRY_VALUE)
                location = bytes(raw).decode("utf-8", "replace") if isinstance(raw, memoryview) else ""
    if external or entries:
        found.append(ExternalTensor(name, location))


_MODEL_FIELDS = {_MODEL_GRAPH: "graph", _MODEL_TRAINING: "training", _MODEL_FUNCTIONS: "function"}
_KINDS: dict[str, dict[int, str]] = {
    "graph": {_GRAPH_NODE: "node", _GRAPH_INIT: "tensor", _GRAPH_SPARSE_INIT: "sparse"},
    "training": {number: "graph" for number in _TRAINING_GRAPHS},
    "function": {_FUNCTION_NODE: "node", _FUNCTION_ATTRIBUTE: "attribute"},
    "node": {_NODE_ATTRIBUTE: "attribute"},
    "attribute": {_ATTR_T: "tensor", _ATTR_TENSORS: "tensor", _ATTR_G: "graph",
                  _ATTR_GRAPHS: "graph", _ATTR_SPARSE: "sparse", _ATTR_SPARSES: "sparse"},
    "sparse": {_SPARSE_VALUES: "tensor", _SPARSE_INDICES: "tensor"},
}
