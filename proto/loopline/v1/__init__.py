"""Generated protobuf and gRPC stubs for the loopline.v1 API."""
