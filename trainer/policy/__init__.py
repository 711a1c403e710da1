"""loopline.trainer.policy."""
