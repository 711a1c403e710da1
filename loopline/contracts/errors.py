"""The one error root every Loopline component raises from.

Callers can catch :class:`LooplineError` to handle any failure Loopline
itself reports; subclasses say what went wrong, not where.
"""

from __future__ import annotations


class LooplineError(Exception):
    """Root of every error Loopline raises on purpose."""


class ConfigError(LooplineError):
    """The configuration file or environment holds a bad or missing value."""


class SchemaError(LooplineError):
    """A payload does not match its topic's schema.

    ``field`` names the offending field when one can be named.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class StackError(LooplineError):
    """The local Kafka/Redis stack could not be started, reached or stopped."""


class MissingToolError(StackError):
    """A program the stack needs (java, mvn, redis-server) is not installed."""

    def __init__(self, tool: str, how_to_install: str) -> None:
        super().__init__(f"{tool} is not installed or not on PATH; install it: {how_to_install}")
        self.tool = tool
        self.how_to_install = how_to_install


class FeatureError(LooplineError):
    """Features could not be computed, packed or read."""


class FingerprintMismatchError(FeatureError):
    """A model or stored value was built for another feature set."""


class ModelError(LooplineError):
    """A model could not be loaded, verified, exported or published."""


class ModelNotFoundError(ModelError):
    """No model (or no such version) is available."""


class IntegrityError(ModelError):
    """A model file does not match the checksum its manifest records."""


class RegistryWriteError(ModelError):
    """The registry's directory refused a write (disk full, read-only, no permission)."""


class DeliveryError(LooplineError):
    """Kafka did not acknowledge a message Loopline had to deliver."""


class InvalidRequestError(LooplineError):
    """A prediction request is malformed; the message says precisely how."""


class OverloadedError(LooplineError):
    """The server is at capacity and sheds the request rather than queueing it."""


class UnavailableError(LooplineError):
    """The component cannot answer now (no model loaded, shutting down)."""


class DefinitionError(ConfigError):
    """A feature repo's definitions are invalid; the message names the object and the fix."""
