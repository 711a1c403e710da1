"""loopline.registry."""
