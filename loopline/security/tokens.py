"""Bearer tokens for the gRPC APIs: hashed at rest, compared in constant time, reloaded on change.

The tokens file holds one token per line, ``<name> <roles> sha256:<hex digest>``
(``#`` starts a comment). Only the digest is stored: the token itself is
shown once, by ``loopline token add``, and never written anywhere. Roles:

- ``health``: the health service;
- ``read``: model metadata and readiness (native ``ModelInfo``, OIP metadata/ready);
- ``infer``: predictions (``Predict``, ``PredictBatch``, OIP ``ModelInfer``);
- ``admin``: everything.

A server checks the file's modification time at most once a second and
re-reads it when it changed, so adding or revoking a token needs no restart.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "tokens"
>>> token = add_token(path, "fraud-api", ("infer", "read"))
>>> store = TokenStore(path)
>>> sorted(store.roles_of(token)), store.roles_of("ll_wrong") is None
(['infer', 'read'], True)
>>> token in path.read_text()
False
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from loopline.contracts.errors import ConfigError
from loopline.security.secrets import file_stamp

HEALTH, READ, INFER, ADMIN = "health", "read", "infer", "admin"
ROLES = (HEALTH, READ, INFER, ADMIN)
TOKEN_PREFIX = "ll_"
_RECHECK_S = 1.0
SETTING = "serving.tokens_file"
CREATE = "create it with `loopline token add`"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenEntry:
    name: str
    roles: frozenset[str]
    digest: bytes


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def parse_tokens(text: str, source: str) -> list[TokenEntry]:
    """The entries of a tokens file; errors name the line, never a secret."""
    entries = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith("sha256:"):
            raise ConfigError(
                f"{source}:{n}: expected '<name> <roles> sha256:<hex>'; "
                "add tokens with `loopline token add`"
            )
        name, roles, hexdigest = parts[0], frozenset(parts[1].split(",")), parts[2][7:]
        unknown = sorted(roles - set(ROLES))
        if unknown:
            raise ConfigError(f"{source}:{n}: unknown role(s) {unknown}; roles are {ROLES}")
        try:
            raw_digest = bytes.fromhex(hexdigest)
        except ValueError:
            raw_digest = b""
        if len(raw_digest) != 32:
            raise ConfigError(f"{source}:{n}: the digest is not 64 hex digits")
        entries.append(TokenEntry(name, roles, raw_digest))
    return entries


def add_token(path: Path, name: str, roles: Iterable[str]) -> str:
    """Append a new token for ``name`` with ``roles``; returns the token (shown once)."""
    roles = tuple(roles)
    if not name or any(c.isspace() for c in name):
        raise ConfigError(f"token name {name!r}: use one word, e.g. the client's name")
    unknown = sorted(set(roles) - set(ROLES))
    if not roles or unknown:
        raise ConfigError(f"token roles {list(roles)}: choose from {ROLES}")
    existing = parse_tokens(path.read_text(), str(path)) if path.exists() else []
    if any(e.name == name for e in existing):
        raise ConfigError(f"{path}: a token named {name!r} exists; revoke it first")
    token = new_token()
    line = f"{name} {','.join(roles)} sha256:{digest(token).hex()}\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(line)
    return token


def revoke_token(path: Path, name: str) -> bool:
    """Remove ``name``'s token; whether it was there."""
    if not path.exists():
        return False
    lines = path.read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if ln.split("#", 1)[0].split()[:1] != [name]]
    if len(kept) == len(lines):
        return False
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(kept)
    tmp.replace(path)
    return True


class TokenStore:
    """The roles of a presented token, from a tokens file that may change at any time.

    The file must be usable when the store is made. Later, a missing or broken
    file (half-written, a typo) keeps the last good tokens, logged once per
    problem, so callers are neither locked out nor let in by it.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp = file_stamp((path,), SETTING, CREATE)
        self._entries = parse_tokens(path.read_text(), str(path))
        self._checked = clock()
        self._problem = ""

    def roles_of(self, token: str) -> frozenset[str] | None:
        """The token's roles, or None for an unknown token. Every entry is compared
        (in constant time), so the answer's timing says nothing about the tokens."""
        self._refresh()
        presented = digest(token)
        found: frozenset[str] | None = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, presented):
                found = entry.roles
        return found

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked < _RECHECK_S:
            return
        with self._lock:
            self._checked = now
            try:
                stamp = file_stamp((self.path,), SETTING, CREATE)
                if stamp != self._stamp:
                    self._entries = parse_tokens(self.path.read_text(), str(self.path))
                    self._stamp = stamp
            except (ConfigError, OSError) as e:
                if str(e) != self._problem:
                    self._problem = str(e)
                    log.error("tokens file unusable, still using the last good one: %s", e)
