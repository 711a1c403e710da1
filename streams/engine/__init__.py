"""Dataflow-engine adapters (Bytewax today): the only code that imports the engine."""
