"""loopline.storage."""
