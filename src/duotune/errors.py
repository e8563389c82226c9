"""User-facing error types: one clear message naming the thing at fault and the fix.

Imports nothing from the rest of duotune, so every module may raise these.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DuotuneError(Exception):
    """Base class for errors a user can cause (bad config, bad row, missing file, unknown name)."""


class ConfigError(DuotuneError, ValueError):
    """A configuration key or value is invalid."""


class UnknownNameError(ConfigError, KeyError):
    """A registry name (method, reward, benchmark, ...) does not exist."""

    def __init__(self, kind: str, name: str, choices: Iterable[str]):
        self.kind, self.name, self.choices = kind, name, sorted(choices)
        super().__init__(
            f"unknown {kind} {name!r}; valid: {', '.join(self.choices) or '(none)'}"
            + did_you_mean(name, self.choices)
        )

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return self.args[0]


class DataError(DuotuneError, ValueError):
    """A data row or file is malformed; names the file, the row and the field."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None,
                 field: str | None = None):
        self.file, self.row, self.field = file, row, field
        where = ", ".join(p for p in (
            f"file {file}" if file else "",
            f"row {row}" if row is not None else "",
            f"field {field!r}" if field else "",
        ) if p)
        super().__init__(f"{where}: {message}" if where else message)


class ShapeError(DuotuneError, ValueError):
    """A tensor argument has the wrong shape or does not match its mask."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""
