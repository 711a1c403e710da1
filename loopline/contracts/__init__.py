"""Shared contracts: schemas, topics, Redis layout, feature set, settings, errors."""
