"""The checker's own errors (it imports nothing of the rest of the package). Each carries a
one-line message; the command line prints it as `error: <message>` and exits 1."""


class CheckerError(Exception):
    """Base class of every error the checker reports."""


class ModelFileError(CheckerError):
    """The model file is missing, unreadable, malformed or inconsistent."""


class UnsupportedModelError(CheckerError):
    """The model is well-formed but outside what the checker supports."""


class CertificateError(CheckerError):
    """The certificate file is missing, malformed, or made for a different model."""


class UnknownStrategyError(CheckerError):
    """The certificate names a strategy the checker does not know."""
