"""Reading files this project did not write: strict JSON, and short quotes of their content.

Every file a run reads is untrusted (a checkpoint, a cache, a Hugging Face directory, a
tokenizer file): its errors must be one line, and must not dump what the file holds.
"""
import json
import math
import reprlib

MAX_SIZE = 2**31 - 1      # the largest model dimension, step or count a file may give


def is_count(value, lo=0, hi=None):
    """A JSON integer of at least lo (and at most hi, if given): true and false are Python ints
    too, but not counts."""
    return type(value) is int and value >= lo and (hi is None or value <= hi)


def is_clean_text(value):
    """A string a path or a name can be: no NUL byte, no lone surrogate (neither can be
    passed to the operating system)."""
    return isinstance(value, str) and "\0" not in value and not any("\ud800" <= c <= "\udfff" for c in value)


def short_repr(value, limit=80):
    """repr(value) in at most `limit` characters, so that an error message can quote what a file
    holds (a tensor name, a shape) and stay one short line. reprlib keeps it cheap: it never
    renders more than a few items of a list or dict, nor more than the first digits of an int."""
    try:
        text = _REPR.repr(value)
    except ValueError:                   # an int past str()'s 4,300 digits, alone or inside a container
        text = (f"<an integer of about {int(value.bit_length() * 0.30103) + 1:,} digits>" if isinstance(value, int)
                else f"<a {type(value).__name__} holding an integer too long to show>")
    return text if len(text) <= limit else text[:limit - 3] + "..."


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlevel = 2


def strict_json(text):
    """json.loads for untrusted files. Raises ValueError with a one-line reason for what Python's
    json accepts beyond JSON (NaN, Infinity, numbers too large for a float), duplicate keys
    (JSON leaves their meaning open), integers of more than 20 digits (past uint64, and slow to
    convert) and nesting too deep to parse (json's RecursionError)."""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_int=_short_int, parse_float=_finite_float,
                          object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):                                  # 1e400: json makes it inf
        raise ValueError(f"{short_repr(text)} is not a finite number")
    return value


def _short_int(digits):
    if len(digits) > 20:                                          # 2**64 has 20 digits
        raise ValueError(f"an integer of {len(digits)} digits")
    return int(digits)


def _no_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {short_repr(key)} appears twice")
        out[key] = value
    return out
