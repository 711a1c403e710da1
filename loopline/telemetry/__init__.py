"""Prometheus collectors made from the metric catalogue, shared by every component."""
