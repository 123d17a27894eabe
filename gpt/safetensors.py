"""Read and write the safetensors format by hand (NumPy only, no extra dependency).

A .safetensors file is three parts, back to back:

    8 bytes     N, the header length, an unsigned 64-bit little-endian integer
    N bytes     a UTF-8 JSON object: {name: {"dtype": "F32", "shape": [rows, cols],
                "data_offsets": [begin, end]}, ...} plus an optional "__metadata__": {str: str};
                writers pad it with spaces so the data starts 8-byte aligned
    the rest    the raw tensors, little-endian, C order; [begin, end) is relative to here

That is all: no pickling (loading never runs code), and a reader can memory-map the data and
view each tensor in place. We read with np.memmap, so opening a 500 MB checkpoint copies
nothing until a tensor is used.
"""
import json
import math
import os
import struct

import numpy as np

# safetensors dtype name -> NumPy dtype of the stored bytes (little-endian). BF16 has no NumPy
# type: it is read as uint16 and widened to float32 (see _bf16_to_f32).
DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
NAMES = {dt: name for name, dt in DTYPES.items() if name != "BF16"}   # for writing
MAX_HEADER_BYTES = 100 * 1024 * 1024     # the reference implementation's limit


class SafetensorsError(ValueError):
    """The file is not a well-formed safetensors file; the message says what is wrong."""


def save_file(tensors, path, metadata=None):
    """Write {name: array} to `path`. Arrays are stored little-endian in C order with their
    own dtype (pass float32 arrays for a float32 file); metadata is an optional {str: str}."""
    header, chunks, offset = {}, [], 0
    for name, array in tensors.items():
        array = np.asarray(array)
        dtype = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
        if dtype not in NAMES:
            raise SafetensorsError(f"cannot store tensor {name!r} of dtype {array.dtype}")
        data = array.astype(dtype, copy=False).tobytes(order="C")
        header[name] = {"dtype": NAMES[dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)                                  # data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in chunks:
            f.write(data)


def read_header(path):
    """-> (header dict without __metadata__, metadata dict, byte offset where the data starts)."""
    with open(path, "rb") as f:
        first = f.read(8)
        if len(first) < 8:
            raise SafetensorsError(f"{path}: too short to be a safetensors file")
        (n,) = struct.unpack("<Q", first)
        if n > MAX_HEADER_BYTES:
            raise SafetensorsError(f"{path}: header length {n} is implausible; not a safetensors file")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SafetensorsError(f"{path}: the header is not valid JSON; not a safetensors file") from None
    if len(raw) < n or not isinstance(header, dict):
        raise SafetensorsError(f"{path}: truncated or malformed header")
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata, 8 + n


def load_file(path):
    """-> {name: host array}. F16/F64/integer tensors keep their dtype (convert as needed);
    BF16 comes back as float32, exactly (a bfloat16 is the top half of a float32)."""
    header, _, start = read_header(path)
    size = os.path.getsize(path) - start                            # bytes of tensor data
    data = np.empty(0, np.uint8)
    if size:                                                         # a plain view of the mapping
        data = np.memmap(path, dtype=np.uint8, mode="r", offset=start).view(np.ndarray)
    out = {}
    for name, info in header.items():
        try:
            dtype = DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{path}: malformed entry for tensor {name!r}: {info}") from None
        if end - begin != math.prod(shape) * dtype.itemsize or not 0 <= begin <= end <= data.size:
            raise SafetensorsError(f"{path}: tensor {name!r} has offsets {begin}..{end} that do not fit "
                                   f"its shape {list(shape)} x {info['dtype']} or the file size (truncated file?)")
        array = data[begin:end].view(dtype).reshape(shape)
        out[name] = _bf16_to_f32(array) if info["dtype"] == "BF16" else array
    return out


def _bf16_to_f32(raw):
    """bfloat16 bits (uint16) -> float32: the same sign, exponent and top 7 mantissa bits."""
    return (raw.astype(np.uint32) << 16).view(np.float32)
