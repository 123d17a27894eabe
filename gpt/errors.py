"""The errors a user can fix, each with a one-line message.

Every one subclasses `UserError`; the command-line tools (train.py, sample.py, python -m
gpt.export) catch that base class alone, print `error: <message>` and exit with status 2.
Errors of the layers below `gpt` (bpe's TokenizerFileError and CorpusError, minigrad's
DeviceError: those packages never import gpt) are translated into these where gpt calls them.
"""


class UserError(Exception):
    """Bad input or a run that cannot go on, for the user to fix; the message is one line
    saying what is wrong and what to do."""


class UsageError(UserError):
    """A bad flag or combination of flags."""


class DataError(UserError, ValueError):
    """The corpus cannot be used; the message says why and what to do."""


class CheckpointError(UserError, ValueError):
    """A checkpoint is missing, unreadable or does not fit the requested run."""


class HFFormatError(UserError, ValueError):
    """A directory is not a GPT-2 checkpoint this project can load; the message says why."""


class TokenizerChoiceError(UserError, ValueError):
    """The tokenizer options or files cannot be used; the message says why."""


class DeviceChoiceError(UserError, RuntimeError):
    """The requested device or dtype is not available (minigrad's DeviceError, translated)."""
