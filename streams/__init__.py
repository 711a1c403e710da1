"""Bytewax dataflows: features, labeled log, drift detection."""
