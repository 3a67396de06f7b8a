"""User-facing errors: each carries a one-line message saying what is wrong and what to do.

The CLI prints `error: <message>` for these and exits non-zero, without a traceback.
"""


class CompactProofsError(Exception):
    """Base class of every error the CLI reports as a one-line message."""


class ModelFileError(CompactProofsError):
    """A model file is missing, unreadable, malformed or inconsistent."""


class UnsupportedModelError(CompactProofsError):
    """The model is well-formed but outside what a strategy (or the library) supports."""


class CertificateError(CompactProofsError):
    """A certificate is missing, malformed, or was made for a different model/strategy."""


class UnknownStrategyError(CompactProofsError):
    """No strategy has the requested id."""
