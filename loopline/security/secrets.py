"""Reading secrets from files, the one place they come from.

Settings hold the *path* of a secret, never its value, so printing the
settings (``loopline status``), a log line or an exception cannot leak one.
Files are what Kubernetes Secrets and most vaults mount, and rotating a
secret is replacing its file.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "pw"
>>> _ = path.write_text("s3cret\\n")
>>> read_secret(path, "kafka.sasl_password_file")
's3cret'
>>> read_secret(path.with_name("missing"), "kafka.sasl_password_file")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
loopline.contracts.errors.ConfigError: kafka.sasl_password_file: cannot read .../missing ...
"""

from __future__ import annotations

import os
from pathlib import Path

from loopline.contracts.errors import ConfigError


def _read(path: Path, setting: str) -> bytes:
    try:
        return Path(path).read_bytes().strip()
    except OSError as e:
        raise ConfigError(
            f"{setting}: cannot read {path} ({e.strerror}); point it at the secret's file"
        ) from None


def read_secret(path: Path, setting: str) -> str:
    """The secret in ``path`` (surrounding whitespace removed); errors name the
    setting and the file, never the content."""
    value = _read(path, setting).decode()
    if not value:
        raise ConfigError(f"{setting}: {path} is empty; write the secret into it")
    return value


def read_key(path: Path, setting: str) -> bytes:
    """A binary key (e.g. the model signing key): the file's bytes, at least 32 of them."""
    key = _read(path, setting)
    if len(key) < 32:
        raise ConfigError(
            f"{setting}: {path} holds {len(key)} bytes; a key needs at least 32 "
            "(e.g. `head -c 48 /dev/urandom | base64 > FILE`)"
        )
    return key


def file_stamp(paths: tuple[Path, ...], setting: str, fix: str) -> tuple[tuple[int, int], ...]:
    """Each file's (modification time, size): what changes when a secret or a
    certificate is replaced, checked cheaply before anything is re-read. ``fix``
    ends the error of a missing file."""
    try:
        return tuple((st.st_mtime_ns, st.st_size) for st in (p.stat() for p in paths))
    except OSError as e:
        raise ConfigError(f"{setting}: cannot read {e.filename} ({e.strerror}); {fix}") from None


def write_private(path: Path, data: str | bytes) -> None:
    """Write ``data`` readable by this user only (the file holds a secret or a key);
    an existing file is made private too."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT leaves an existing file's mode as it was
    with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
