"""Errors that mean "the user asked for something impossible": the CLI prints them in one line."""

from __future__ import annotations

__all__ = ["UserError", "ConfigError", "DataError", "SearchError"]


class UserError(Exception):
    """Base of all user-facing errors; the message alone must say what is wrong and where."""


class ConfigError(UserError, ValueError):
    """A configuration, search space or schedule is invalid."""


class DataError(UserError):
    """A dataset folder, CSV or video cannot be used as given."""


class SearchError(UserError):
    """The search cannot go on (e.g. every candidate of a step failed or was skipped)."""
