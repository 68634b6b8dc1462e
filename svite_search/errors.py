"""Exceptions with a meaning for the command line.

``UserInputError`` (and its subclasses) is bad input: the CLI prints its one-line message and
exits with code 2. Anything else is a runtime failure (exit code 1).
"""
from __future__ import annotations


class UserInputError(ValueError):
    """Bad input from the user: a config value, a path, a command-line option."""


class ConfigError(UserInputError):
    """An invalid configuration value. ``field`` is the dotted key path (``train.epochs``)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class DataPathError(UserInputError):
    """A dataset path that is missing, empty or not in the expected layout."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")
