"""One exception type for problems a user can fix (bad input, missing file, bad option)."""

from __future__ import annotations

import os


class HsynexError(Exception):
    """A user-facing error: ``what`` went wrong, optionally with the ``path`` it concerns.

    Command-line entry points print it as one line ``ERROR: <what>: <path>`` and exit 1.
    """

    def __init__(self, what: str, path: str | os.PathLike | None = None):
        self.what = what
        self.path = None if path is None else os.fspath(path)
        super().__init__(str(self))

    def __str__(self) -> str:
        return self.what if self.path is None else f"{self.what}: {self.path}"
