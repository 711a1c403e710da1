"""Kafka clients every component shares (confluent-kafka underneath)."""
