"""loopline.streams.common."""
