"""Helpers shared by test modules in more than one directory (importable as ``_support``)."""
