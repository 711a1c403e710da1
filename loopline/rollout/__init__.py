"""loopline.rollout."""
