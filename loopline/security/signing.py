"""Model signatures: an HMAC-SHA256 that only holders of the registry's key can make.

The trainer signs what identifies a version (model name, version, the model
file's sha256, the feature-set fingerprint, and a digest of the rest of its
manifest: feature order, input and output names, golden rows); serving recomputes the
signature with its copy of the key and refuses a model whose signature is
missing or wrong, so a file dropped into the registry without the key never
serves.

>>> key = b"k" * 32
>>> v3 = dict(model="fraud", version="3", sha256="ab" * 32, fingerprint="f" * 64)
>>> sig = model_signature(key, **v3)
>>> signature_ok(key, sig, **v3), signature_ok(key, sig, **{**v3, "version": "4"})
(True, False)
"""

from __future__ import annotations

import hashlib
import hmac

SCHEME = "hmac-sha256"


def model_signature(
    key: bytes, *, model: str, version: str, sha256: str, fingerprint: str, manifest: str = ""
) -> str:
    """``manifest``: a digest of every other field the model is served by."""
    message = "\n".join((SCHEME, model, version, sha256, fingerprint, manifest)).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signature_ok(key: bytes, signature: str, **version_fields: str) -> bool:
    """Whether ``signature`` was made with ``key`` for exactly this version (constant time);
    ``version_fields`` as :func:`model_signature` takes them."""
    expected = model_signature(key, **version_fields)
    return hmac.compare_digest(expected, signature or "")
