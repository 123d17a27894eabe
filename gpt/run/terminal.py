"""Text shown to a person: control characters made visible instead of obeyed.

A corpus or a model can hold any bytes, and a terminal obeys control bytes: ESC starts
sequences that move the cursor, clear the screen, retitle the window or change colours; BEL
rings; CR overwrites the line. `printable` writes each such character as a visible escape
(ESC -> the four characters \\x1b), so a preview shows what is there without acting on it.
Newline and tab are kept: they are the layout of ordinary text. Backslashes are left as they
are, so the escapes are for reading, not for decoding back.

Where it applies: train.py's previews (the first training window, the samples) always go
through it, since they are there to be read and a log file is read in a terminal later. The
text sample.py streams is the product itself: it is escaped only when stdout is a terminal
(`TerminalWriter`), so `sample.py > out.txt` keeps exactly what the model wrote, as `ls`
and `git` do with odd file names.
"""
import re

# C0 controls except tab (\x09) and newline (\x0a), DEL, and the C1 controls U+0080..U+009F.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text):
    """`text` with every control character except \\n and \\t written as \\xNN."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class TerminalWriter:
    """Wraps a text stream (a terminal): every write goes through `printable`.

    The escape is per character, so text written in pieces (one decoded token at a time) is
    escaped exactly as if it were written at once."""

    def __init__(self, out):
        self.out = out

    def write(self, text):
        return self.out.write(printable(text))

    def flush(self):
        self.out.flush()
