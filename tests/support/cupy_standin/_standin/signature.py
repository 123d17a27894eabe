"""The parameter types of a CUDA kernel, read from its source, so that a RawKernel launch can be
held to them: a kernel reads its arguments as raw bytes, so an np.int64 given for an `int`, a
float64 array for a `float*`, or one argument too few is garbage on a GPU, never an error.

The parser is deliberately small (typedef/using aliases, template parameters, const/restrict
qualifiers, pointers). A parameter whose type it cannot resolve is not checked, and a kernel
whose declaration it cannot find is not checked at all.
"""
import re

import numpy as np

C_TYPES = {
    "float": np.float32, "double": np.float64, "__half": np.float16, "half": np.float16,
    "bool": np.bool_, "char": np.int8, "signed char": np.int8, "unsigned char": np.uint8,
    "short": np.int16, "unsigned short": np.uint16, "int": np.int32, "signed int": np.int32,
    "unsigned": np.uint32, "unsigned int": np.uint32, "long": np.int64, "unsigned long": np.uint64,
    "long long": np.int64, "long long int": np.int64, "unsigned long long": np.uint64,
    "unsigned long long int": np.uint64, "size_t": np.uint64, "ptrdiff_t": np.int64,
    "int8_t": np.int8, "uint8_t": np.uint8, "int16_t": np.int16, "uint16_t": np.uint16,
    "int32_t": np.int32, "uint32_t": np.uint32, "int64_t": np.int64, "uint64_t": np.uint64,
}
_QUALIFIERS = {"const", "volatile", "__restrict__", "__restrict", "restrict"}


class Param:
    """One kernel parameter: its declaration, whether it is a pointer, its (pointee) dtype
    (None: not resolved, so not checked)."""
    __slots__ = ("text", "pointer", "dtype")

    def __init__(self, text, pointer, dtype):
        self.text, self.pointer, self.dtype = text, pointer, dtype


def _split_top(text):
    """Splits on commas outside brackets."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch in "<([":
            depth += 1
        elif ch in ">)]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [p.strip() for p in parts + [current] if p.strip()]


def _aliases(code):
    aliases = {name: " ".join(t.split()) for t, name in re.findall(r"\btypedef\s+([\w\s]+?)\s+(\w+)\s*;", code)}
    aliases.update((name, " ".join(t.split()))
                   for name, t in re.findall(r"\busing\s+(\w+)\s*=\s*([\w\s]+?)\s*;", code))
    return aliases


def _dtype(type_words, aliases, template):
    name = " ".join(type_words)
    for _ in range(8):                      # resolve chains of aliases
        name = template.get(name, aliases.get(name, name))
    dtype = C_TYPES.get(name)
    return None if dtype is None else np.dtype(dtype)


def kernel_params(code, base, template_args):
    """[Param] of kernel `base` in `code`, with template parameters bound to `template_args`
    ('float' or 'float, 4'); None when the declaration is not found."""
    m = re.search(r"(?:template\s*<([^<>]*)>\s*)?(?:extern\s+\"C\"\s+)?__global__\s+void\s+"
                  r"(?:__launch_bounds__\s*\([^)]*\)\s*)?" + re.escape(base) + r"\s*\(([^)]*)\)", code)
    if m is None:
        return None
    names = [p.split()[-1] for p in _split_top(m.group(1) or "")]
    template = dict(zip(names, _split_top(template_args)))
    aliases = _aliases(code)
    params = []
    for text in _split_top(m.group(2)):
        if text == "void":
            continue
        pointer = "*" in text or "[" in text
        words = [w for w in re.findall(r"[A-Za-z_]\w*", text.split("[")[0]) if w not in _QUALIFIERS]
        type_words = words[:-1] if len(words) > 1 else words
        params.append(Param(text, pointer, _dtype(type_words, aliases, template)))
    return params
