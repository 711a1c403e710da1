"""The fraud example repo, loaded once for tests that use its definitions."""

from __future__ import annotations

from dataclasses import replace

from loopline.featurecore.event_schema import EventParser
from loopline.featurecore.features import FeatureSet, Window
from loopline.featurerepo.loader import builtin_example, load_project

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


def changed_fraud_features() -> FeatureSet:
    """The fraud feature set with the card view's 1 h window at another resolution:
    another computation, so another fingerprint (a new applied version)."""
    card, merchant = FRAUD_FEATURES.views
    windows = tuple(Window(3600, 6) if w.seconds == 3600 else w for w in card.windows)
    return replace(FRAUD_FEATURES, views=(replace(card, windows=windows), merchant))


# Event time of transaction 0 in the small hand-made streams below.
BASE_MS = 1_700_000_000_000


def transaction(i: int = 0, **fields: object) -> dict[str, object]:
    """Transaction ``i`` of a small stream: 7 cards, 3 merchants, one per second
    from BASE_MS; ``fields`` override."""
    doc: dict[str, object] = {
        "event_id": f"e{i}",
        "card_id": f"c{i % 7}",
        "merchant_id": f"m{i % 3}",
        "amount": 10.5 + i,
        "event_time": BASE_MS + i * 1000,
    }
    doc.update(fields)
    return doc
