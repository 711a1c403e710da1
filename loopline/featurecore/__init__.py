"""loopline.featurecore."""
