"""Signed model versions: the registry's key, what it signs, and why a version is refused.

With ``registry.signing_key_file`` set, the registry signs every version it
publishes (:func:`loopline.security.signing.model_signature` of the model
name, version, model file sha256, feature-set fingerprint and a digest of
every other immutable manifest field) into the
manifest's ``signature``, and serving loads a version only when that
signature checks out. The sha256 alone proves the file matches its
manifest; the signature proves a holder of the key wrote that manifest, so a
file and manifest dropped into the registry without the key never serve.

>>> from dataclasses import replace
>>> from loopline.registry.manifest import Manifest
>>> key = ModelKey(b"k" * 32)
>>> v3 = Manifest("fraud", "f" * 64, ["a"], model_name="fraud", version="3", sha256="ab" * 32)
>>> key.check(replace(v3, signature=key.sign(v3)))
>>> key.check(v3)
Traceback (most recent call last):
...
loopline.registry.signatures.SignatureError: fraud v3 is unsigned, ...
>>> key
ModelKey(<hidden>)
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from loopline.contracts.errors import IntegrityError
from loopline.contracts.settings import RegistrySettings
from loopline.security.secrets import read_key
from loopline.security.signing import model_signature, signature_ok

if TYPE_CHECKING:  # the manifest module imports this one
    from loopline.registry.manifest import Manifest

SETTING = "registry.signing_key_file"
# Why a version is refused (the refusal metric's ``reason`` label).
UNSIGNED = "unsigned"
BAD_SIGNATURE = "bad_signature"
REASONS = (UNSIGNED, BAD_SIGNATURE)


class SignatureError(IntegrityError):
    """A version's signature is missing or wrong; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ModelKey:
    """The registry's signing key; its repr hides it, so no log or error can print it."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "ModelKey(<hidden>)"

    @staticmethod
    def from_settings(registry: RegistrySettings) -> ModelKey | None:
        """The key ``registry.signing_key_file`` names (None when unset)."""
        path = registry.signing_key_file
        return None if path is None else ModelKey(read_key(path, SETTING))

    def sign(self, m: Manifest) -> str:
        return model_signature(self._key, **_fields(m))

    def check(self, m: Manifest) -> None:
        """Raise :class:`SignatureError` unless ``m`` carries this key's signature.

        The message names the version and the reason, never the key or a signature.
        """
        label = f"{m.model_name} v{m.version}"
        if not m.signature:
            raise SignatureError(
                f"{label} is unsigned, and {SETTING} is set: only signed versions load; "
                "publish it from a trainer holding the key",
                UNSIGNED,
            )
        if not signature_ok(self._key, m.signature, **_fields(m)):
            raise SignatureError(
                f"{label} has a bad signature: not made with this server's key, or the "
                "model file or its manifest changed since it was signed; "
                "republish it from a trainer holding the key",
                BAD_SIGNATURE,
            )


def _fields(m: Manifest) -> dict[str, str]:
    return {
        "model": m.model_name,
        "version": m.version,
        "sha256": m.sha256,
        "fingerprint": m.fingerprint,
        "manifest": _served_by_digest(m),
    }


def _served_by_digest(m: Manifest) -> str:
    """A digest of every immutable manifest field (feature order, input and output
    names, golden rows, ...), so none of them can be changed without the key."""
    from loopline.registry.manifest import IMMUTABLE_FIELDS

    fields = {name: getattr(m, name) for name in sorted(IMMUTABLE_FIELDS - {"signature"})}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
