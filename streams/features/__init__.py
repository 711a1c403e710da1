"""loopline.streams.features."""
