"""The local development stack: a real Kafka broker (KRaft) and Redis."""
