"""The one error a user's input can cause, so the CLI can answer it with exit code 2."""

from __future__ import annotations


class SimInputError(ValueError):
    """A cluster file, trace, policy name or target is wrong; the message says where."""
