"""The labeled log: logged predictions joined with delayed outcomes (engine-neutral).

- :mod:`.inputs` decodes records of the predictions and outcomes topics,
- :mod:`.clock` turns every input partition's progress into a watermark,
- :mod:`.join` joins both sides per shard with a label maturity window,
- :mod:`.output` commits examples to the labeled topic and the offline store
  exactly once per ``request_id`` (Kafka transactions + deterministic Parquet
  file names reconciled on restart),
- :mod:`.config` resolves everything from :class:`~loopline.contracts.settings.Settings`.

The Bytewax adapter is :mod:`.bytewax_flow`; the runner :mod:`.run`;
``loopline run labels`` :mod:`.commands`.
"""
