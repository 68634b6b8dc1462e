"""Exceptions with a meaning for the command line.

``UserInputError`` (and its subclasses) is bad input: the CLI prints its one-line message and
exits with code 2. Anything else is a runtime failure (exit code 1).
"""
from __future__ import annotations


def first_line(err: BaseException | str, limit: int | None = None) -> str:
    """The first line of an error's message (or of a text), stripped and cut to ``limit``
    characters; ``""`` when there is none. One-line errors quote a library's message this way
    (a traceback's text can run to pages)."""
    text = str(err).strip()
    line = text.splitlines()[0].strip() if text else ""
    return line if limit is None else line[:limit]


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
