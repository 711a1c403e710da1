"""The features flow: event topics -> windowed feature values per entity in Redis.

- :mod:`.decoding` parses, validates and lateness-gates each poll,
- :mod:`.aggregation` keeps each shard's entity states and emits values,
- :mod:`.redis_sink` writes them if newer, with TTL,
- :mod:`.config` resolves everything from :class:`~loopline.contracts.settings.Settings`.

The Bytewax adapter is :mod:`.bytewax_flow`; the runner :mod:`.run`;
``loopline run features`` :mod:`.commands`.
"""
