"""External-data references in a serialized ONNX model, found by walking the protobuf wire format.

onnxruntime resolves external data of a model loaded from bytes against the current directory,
so a model could read arbitrary files next to the server. The onnx package is optional, so the
check walks the protobuf wire format itself: every TensorProto reachable from the model (graphs,
node attributes, sparse tensors, functions, training info) is inspected for data_location
EXTERNAL (field 14 = 1) or external_data entries (field 13). Standard library only.
"""

from __future__ import annotations

# message -> {field number: message type of that (length-delimited) field}
_SCHEMA: dict[str, dict[int, str]] = {
    "Model": {7: "Graph", 20: "TrainingInfo", 25: "Function"},
    "TrainingInfo": {1: "Graph", 2: "Graph"},
    "Graph": {1: "Node", 5: "Tensor", 15: "Sparse"},
    "Function": {7: "Node", 11: "Attribute"},
    "Node": {5: "Attribute"},
    "Attribute": {5: "Tensor", 6: "Graph", 10: "Tensor", 11: "Graph", 22: "Sparse", 23: "Sparse"},
    "Sparse": {1: "Tensor", 2: "Tensor"},
    "Tensor": {},
}
_MAX_DEPTH = 64


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message (or nest deeper than we walk)."""


def external_data_refs(data: bytes) -> set[str]:
    """External-data locations referenced anywhere in a serialized ModelProto.

    A tensor marked data_location=EXTERNAL without a location entry counts as "".

    Raises:
        WireError: truncated or malformed protobuf, a wire type ONNX does not use, or graphs
            nested more than 64 deep.
    """
    refs: set[str] = set()
    _walk(data, 0, len(data), "Model", 0, refs)
    return refs


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Decode a protobuf varint at pos: (value, next position)."""
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise WireError("truncated or malformed protobuf")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _walk(buf: bytes, pos: int, end: int, kind: str, depth: int, refs: set[str]) -> None:
    """Collect external-data locations in the message buf[pos:end] of type kind."""
    if depth > _MAX_DEPTH:
        raise WireError("graph nesting too deep")
    schema = _SCHEMA[kind]
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            if kind == "Tensor" and field == 14 and value == 1:
                refs.add("")  # named in the message as data_location=EXTERNAL
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise WireError("truncated or malformed protobuf")
            if kind == "Tensor" and field == 13:
                refs.add(_external_location(buf[pos : pos + length]))
            elif field in schema:
                _walk(buf, pos, pos + length, schema[field], depth + 1, refs)
            pos += length
        else:  # groups (3, 4) are not used by ONNX; anything else is not protobuf
            raise WireError(f"unexpected protobuf wire type {wire}")
    if pos != end:
        raise WireError("truncated or malformed protobuf")


def _external_location(entry: bytes) -> str:
    """The file named by an external_data entry (key "location"), else "" (offset, length...)."""
    pos, fields = 0, {}
    while pos < len(entry):
        key, pos = _varint(entry, pos, len(entry))
        if key & 7 != 2:
            return ""
        length, pos = _varint(entry, pos, len(entry))
        fields[key >> 3] = entry[pos : pos + length].decode("utf-8", "replace")
        pos += length
    return fields.get(2, "") if fields.get(1) == "location" else ""
