"""Secrets, certificates, tokens and signatures: what every secured hop shares."""
