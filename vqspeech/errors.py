"""The library's exception types: the only ones the command line catches.

Every message says what went wrong *and* what to do about it, in one line, because the
CLI prints it verbatim (no traceback) and exits non-zero.
"""

from __future__ import annotations


class VQSpeechError(Exception):
    """Base class of every error the library raises on purpose."""


class ConfigError(VQSpeechError):
    """A recipe, override or config value is unknown or invalid."""


class CheckpointError(VQSpeechError):
    """A checkpoint is missing, unreadable, corrupt or from an incompatible version."""


class AudioError(VQSpeechError):
    """An audio file is missing, empty, unreadable or holds non-finite samples."""


class DataError(VQSpeechError):
    """A dataset root, manifest or speaker table is missing or malformed."""


class TokenFormatError(VQSpeechError):
    """A token file is truncated, corrupted, foreign or from an unsupported version."""


class ModelMismatchError(VQSpeechError):
    """Tokens or a checkpoint belong to a different model than the one given."""


class OutputError(VQSpeechError):
    """An output file exists (and overwriting is off) or cannot be written."""
