"""Generated stubs for the Open Inference Protocol v2 (package inference)."""
