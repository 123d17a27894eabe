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

A file is untrusted input: read_header checks the whole header (types, sizes, offsets against
the file's size) before anything uses it, and every problem is one SafetensorsError line.
"""
import json
import math
import os
import struct

import numpy as np

from .untrusted import is_count, short_repr, strict_json

# safetensors dtype name -> NumPy dtype of the stored bytes (little-endian). BF16 has no NumPy
# type: it is read as uint16 and widened to float32 (see _bf16_to_f32).
DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
NAMES = {dt: name for name, dt in DTYPES.items() if name != "BF16"}   # for writing
MAX_HEADER_BYTES = 100 * 1024 * 1024     # the reference implementation's limit
MAX_DIMS = 32                            # NumPy 1.x's most dimensions (2.x allows 64)


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
    """-> (header, metadata, byte offset where the data starts), the header checked in full:
    {name: {"dtype": one of DTYPES, "shape": [n, ...], "data_offsets": [begin, end]}} with
    shape a list of at most MAX_DIMS non-negative integers, end - begin = prod(shape) x the
    dtype's size, and the tensors tiling the data exactly: sorted by offset, each begins where
    the one before ends, the first at 0 and the last at the end of the file (the reference
    library's rule: no overlaps, no holes, no trailing bytes). metadata is {str: str}.

    Raises SafetensorsError with one line naming the file and the tensor; the work is bounded
    by the file's size (the header is read whole only once the file is seen to hold it)."""
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        first = f.read(8)
        if len(first) < 8:
            raise SafetensorsError(f"{path}: too short to be a safetensors file")
        (n,) = struct.unpack("<Q", first)
        if n > MAX_HEADER_BYTES:
            raise SafetensorsError(f"{path}: header length {n} is implausible; not a safetensors file")
        if 8 + n > file_size:
            raise SafetensorsError(f"{path}: the header claims {n} bytes but the file has only {file_size}; "
                                   "it is truncated or not a safetensors file")
        header = _parse_json(path, f.read(n))
    metadata = header.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise SafetensorsError(f"{path}: __metadata__ must map strings to strings, not {short_repr(metadata)}")
    data_size = file_size - 8 - n
    for name, info in header.items():
        _check_entry(path, name, info)
    _check_tiling(path, header, data_size)
    return header, metadata, 8 + n


def _parse_json(path, raw):
    """The header's bytes -> a dict (strict_json)."""
    try:
        header = strict_json(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise SafetensorsError(f"{path}: the header is not UTF-8 (bad byte at offset {8 + e.start}); "
                               "not a safetensors file") from None
    except ValueError as e:
        raise SafetensorsError(f"{path}: the header is not valid JSON ({e}); not a safetensors file") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: the header is {short_repr(header)}, not a JSON object of tensors")
    return header


def _check_entry(path, name, info):
    """One tensor's entry: the fields, their types, and shape agreeing with data_offsets."""
    where = f"{path}: tensor {short_repr(name)}"
    if not (isinstance(info, dict) and set(info) == {"dtype", "shape", "data_offsets"}):
        raise SafetensorsError(f"{where} is described by {short_repr(info)}, not an object with exactly "
                               "dtype, shape and data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not (isinstance(dtype, str) and dtype in DTYPES):
        raise SafetensorsError(f"{where} has dtype {short_repr(dtype)}; expected one of {', '.join(DTYPES)}")
    if not (isinstance(shape, list) and len(shape) <= MAX_DIMS and all(map(is_count, shape))):
        raise SafetensorsError(f"{where} has shape {short_repr(shape)}; expected a list of at most "
                               f"{MAX_DIMS} non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(is_count, offsets))
            and offsets[0] <= offsets[1]):
        raise SafetensorsError(f"{where} has data_offsets {short_repr(offsets)}; expected [begin, end] "
                               "with 0 <= begin <= end")
    itemsize = DTYPES[dtype].itemsize
    if math.prod(d for d in shape if d) * itemsize >= 2 ** 63:      # NumPy refuses it, even when empty
        raise SafetensorsError(f"{where} has shape {short_repr(shape)}, too large for any array")
    begin, end = offsets
    if end - begin != math.prod(shape) * itemsize:
        raise SafetensorsError(f"{where}: shape {short_repr(shape)} of {dtype} needs {math.prod(shape) * itemsize} "
                               f"bytes, but data_offsets {begin}..{end} hold {end - begin}")


def _check_tiling(path, header, data_size):
    """The tensors' byte ranges, sorted, must cover [0, data_size) exactly once."""
    position = 0
    for name, (begin, end) in sorted(((n, i["data_offsets"]) for n, i in header.items()), key=lambda t: t[1]):
        if begin != position:
            what = ("overlaps the tensor before it" if begin < position
                    else f"leaves a hole at bytes {position}..{begin}")
            raise SafetensorsError(f"{path}: tensor {short_repr(name)} at bytes {begin}..{end} of the data {what}")
        position = end
    if position != data_size:
        raise SafetensorsError(f"{path}: the tensors end at byte {position} of the data, but the file holds "
                               f"{data_size} bytes of data" + (" (truncated file?)" if position > data_size else ""))


def load_file(path):
    """-> {name: host array}. F16/F64/integer tensors keep their dtype (convert as needed);
    BF16 comes back as float32, exactly (a bfloat16 is the top half of a float32)."""
    header, _, start = read_header(path)
    size = max((info["data_offsets"][1] for info in header.values()), default=0)   # = the data's size
    data = np.empty(0, np.uint8)
    if size:                                                         # a plain view of the mapping
        data = np.memmap(path, dtype=np.uint8, mode="r", offset=start, shape=(size,)).view(np.ndarray)
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        array = data[begin:end].view(DTYPES[info["dtype"]]).reshape(info["shape"])
        out[name] = _bf16_to_f32(array) if info["dtype"] == "BF16" else array
    return out


def _bf16_to_f32(raw):
    """bfloat16 bits (uint16) -> float32: the same sign, exponent and top 7 mantissa bits."""
    return (raw.astype(np.uint32) << 16).view(np.float32)
