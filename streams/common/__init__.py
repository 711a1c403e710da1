"""What every dataflow shares: Kafka reading, dead letters, run options, metrics.

Engine-neutral modules (``kafka_io``, ``records``, ``dead_letters``,
``run_options``, ``metrics``) and the Bytewax side (``bytewax_*``: the
partition source, the dead-letter sink, the runner).
"""
