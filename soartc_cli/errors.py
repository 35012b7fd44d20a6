"""Errors raised by soartc; the CLI turns each into one line and an exit code."""


class SoartcError(Exception):
    """Base class of every error soartc raises on purpose."""


class UsageError(SoartcError):
    """A bad option value, kernel file or input path: exit code 2."""


class InputError(SoartcError):
    """One image file cannot be used (not an image, truncated, too large…): it is skipped."""
