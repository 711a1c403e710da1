"""The few store operations a shared registry needs, over fsspec, each atomic for readers.

* :meth:`ObjectStore.read` one object (None when absent);
* :meth:`ObjectStore.create` an object only if absent (False when it exists);
* :meth:`ObjectStore.update` read-modify-write of one object that no
  concurrent writer can lose: a conditional put (S3 ``If-Match`` /
  ``If-None-Match``) retried on conflict, or a file lock on a filesystem.

Readers see an object whole or not at all: on S3 a PUT is atomic; on a
filesystem every write goes to a temporary name that is renamed (or, for
``create``, hard-linked) into place. Stores without a conditional write that
Loopline knows are refused rather than silently racing.

>>> import tempfile
>>> store = ObjectStore.open("file://" + tempfile.mkdtemp())
>>> store.create("m/a.json", b"1"), store.create("m/a.json", b"2"), store.read("m/a.json")
(True, False, b'1')
>>> store.update("m/a.json", lambda old: (old + b"+", "done"))
'done'
>>> store.read("m/a.json"), store.children("m"), store.read("m/none")
(b'1+', ['a.json'], None)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from loopline.contracts.errors import ConfigError, ModelError
from loopline.storage.files import fsync

T = TypeVar("T")
# A change of an object: old bytes (None: absent) -> (new bytes, or None to leave it; result).
Change = Callable[[bytes | None], tuple[bytes | None, T]]
CONFLICT_RETRIES = 20
LOCAL = ("file", "local")
S3 = ("s3", "s3a")


class ObjectStore(ABC):
    """Objects under one root URL; subclasses know how to write conditionally."""

    def __init__(self, fs: Any, root: str, url: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.url = url.rstrip("/")

    @staticmethod
    def open(url: str, *, endpoint_url: str = "") -> ObjectStore:
        """The store at ``url`` (``s3://bucket/prefix`` or ``file:///path``)."""
        import fsspec

        protocol = url.split("://", 1)[0] if "://" in url else "file"
        if protocol not in LOCAL + S3:
            raise ConfigError(
                f"registry.uri {url!r}: Loopline knows conditional writes for s3:// and "
                "file:// stores only, and a shared registry needs them; use one of those"
            )
        options: dict[str, Any] = {}
        if protocol in S3 and endpoint_url:
            options["client_kwargs"] = {"endpoint_url": endpoint_url}
        try:
            fs, root = fsspec.core.url_to_fs(url, **options)
        except ImportError as e:
            raise ConfigError(
                f"registry.uri {url!r} needs an fsspec driver: pip install 'loopline[s3]' ({e})"
            ) from e
        if protocol in S3:
            return S3Store(fs, root, url)
        return LocalStore(fs, root, url)

    def key_url(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def read(self, key: str) -> bytes | None:
        try:
            return bytes(self.fs.cat_file(self._path(key)))
        except FileNotFoundError:
            return None

    def children(self, prefix: str) -> list[str]:
        """Names directly under ``prefix`` (objects and "folders"), fresh from the store;
        hidden names (a lock file, a write in progress) left out."""
        try:
            entries = self.fs.ls(self._path(prefix), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        names = (str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)
        return sorted(n for n in names if not n.startswith("."))

    @abstractmethod
    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist yet; False when it did."""

    @abstractmethod
    def update(self, key: str, change: Change[T]) -> T:
        """Apply ``change`` to ``key``'s document by compare-and-set; the new value."""


class S3Store(ObjectStore):
    """S3 (and S3-compatible stores with conditional writes): ETags decide."""

    def create(self, key: str, data: bytes) -> bool:
        try:
            self.fs.pipe_file(self._path(key), data, mode="create")
        except FileExistsError:
            return False
        return True

    def update(self, key: str, change: Change[T]) -> T:
        path = self._path(key)
        for _ in range(CONFLICT_RETRIES):
            # The ETag first, then the body: a change between the two fails the put below.
            try:
                etag = self.fs.info(path, refresh=True)["ETag"]
                old: bytes | None = bytes(self.fs.cat_file(path))
            except FileNotFoundError:
                etag, old = None, None
            new, result = change(old)
            if new is None:
                return result
            try:
                if etag is None:
                    self.fs.pipe_file(path, new, mode="create")
                else:
                    self.fs.pipe_file(path, new, IfMatch=etag)
            except FileExistsError:
                continue
            except OSError as e:
                if "PreconditionFailed" not in str(e) and "pre-condition" not in str(e):
                    raise
                continue
            return result
        raise ModelError(f"{self.key_url(key)}: still changing after {CONFLICT_RETRIES} tries")


class LocalStore(ObjectStore):
    """A filesystem (local or mounted): temporary names, renames and a lock file."""

    def _local(self, key: str) -> Path:
        return Path(self._path(key))

    def create(self, key: str, data: bytes) -> bool:
        target = self._local(key)
        with _staged(target, data) as tmp:
            try:
                os.link(tmp, target)  # fails when the name exists: an exclusive, whole create
            except FileExistsError:
                return False
        fsync(target.parent)
        return True

    def update(self, key: str, change: Change[T]) -> T:
        target = self._local(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.parent / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                new, result = change(self.read(key))
                if new is not None:
                    with _staged(target, new) as tmp:
                        os.replace(tmp, target)
                    fsync(target.parent)
                return result
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def _staged(target: Path, data: bytes) -> Iterator[Path]:
    """``data`` in a synced temporary file beside ``target``, removed afterwards if left."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)
