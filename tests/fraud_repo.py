"""The fraud example repo, loaded once for tests that use its definitions."""

from __future__ import annotations

from loopline.contracts.event_schema import EventParser
from loopline.contracts.repo import builtin_example, load_project

ROOT = builtin_example()
assert ROOT is not None, "examples/fraud is missing from this checkout"
PROJECT = load_project(ROOT)
FRAUD_FEATURES = PROJECT.feature_set()
TRANSACTIONS = PROJECT.source("transactions")


def transaction_parser() -> EventParser:
    """The features flow's parser of the fraud example's events."""
    return EventParser(TRANSACTIONS, keys=("card_id", "merchant_id"))
CARD_VIEW = FRAUD_FEATURES.view("card")
MERCHANT_VIEW = FRAUD_FEATURES.view("merchant")
