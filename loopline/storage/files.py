"""Crash-safe file writes: a reader never sees a partial file, a rename survives a crash.

>>> import tempfile, pathlib
>>> target = pathlib.Path(tempfile.mkdtemp()) / "state.json"
>>> atomic_write(target, '{"ok": true}')
>>> with atomic_replace(target) as tmp:
...     _ = tmp.write_text('{"ok": false}')
>>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
('{"ok": false}', ['state.json'])
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_replace(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; on success it replaces ``path`` durably.

    The written file is fsynced, renamed into place and its directory fsynced;
    on any failure the temporary file is removed and ``path`` is untouched.
    """
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync(path.parent)


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, crash-safely (see :func:`atomic_replace`)."""
    with atomic_replace(path) as tmp:
        tmp.write_text(text)


def fsync(path: Path) -> None:
    """Flush a file, or a directory's entries (so a rename survives a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
