"""Deprecated shim: the fraud feature set, compiled from the example repo.

The fraud use case lives in ``examples/fraud`` as a feature repo like any
user's; code reaches a feature set through
:func:`loopline.contracts.repo.project_of`. This module remains only for
older tests and benchmarks and goes away with them.

>>> FRAUD_FEATURES.model_features[:3]
('card.txn_count_10m', 'card.amount_sum_10m', 'card.amount_max_10m')
>>> len(FRAUD_FEATURES.model_features), len(FRAUD_FEATURES.fingerprint)
(20, 64)
"""

from __future__ import annotations

from loopline.contracts.errors import ConfigError, FeatureError
from loopline.contracts.features import FeatureSet
from loopline.contracts.repo import builtin_example, load_project


def _example_feature_set() -> FeatureSet:
    root = builtin_example()
    if root is None:
        raise ConfigError("the fraud example repo is not beside this installation")
    return load_project(root).feature_set()


FRAUD_FEATURES = _example_feature_set()
FEATURE_SETS = {FRAUD_FEATURES.name: FRAUD_FEATURES}


def get_feature_set(name: str) -> FeatureSet:
    """Look a feature set of the example repo up by name."""
    try:
        return FEATURE_SETS[name]
    except KeyError:
        raise FeatureError(f"unknown feature set {name!r}; known: {sorted(FEATURE_SETS)}") from None
