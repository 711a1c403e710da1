"""loopline.trainer.rollout."""
