"""gRPC inference server."""
