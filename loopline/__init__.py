"""Loopline: a streaming real-time ML loop on Kafka, Bytewax, Redis, ONNX and River."""

__version__ = "0.1.0"
