"""Atomic writes of the cohort outputs (tables, figures, failure notes).

A thin layer over ``mri_hsynex.io.atomic_path`` that also creates the output folder and makes
the file readable by the group (``mkstemp`` creates it private): cohort outputs are usually
shared.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import HsynexError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; it is renamed onto ``path`` on success.

    The folder is created if needed. On an exception the temporary file is removed and the
    exception propagates; an existing ``path`` is left as it was.
    """
    from ..io import atomic_path

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HsynexError(f"cannot create the output folder ({err.strerror})",
                          path.parent) from err
    with atomic_path(path) as tmp:
        yield tmp
        os.chmod(tmp, 0o644)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see ``atomic_output``)."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)
