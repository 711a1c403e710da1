"""Training, the model registry and the retrain policy."""
