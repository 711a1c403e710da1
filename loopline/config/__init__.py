"""loopline.config."""
