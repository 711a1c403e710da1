"""Packed feature values and key layout."""

from __future__ import annotations

import pytest
from fraud_repo import FRAUD_FEATURES

from loopline.contracts.errors import FeatureError
from loopline.contracts.redis_layout import RedisLayout, pack, unpack


def test_round_trip_and_count_check() -> None:
    raw = pack(12.25, [1.0, -2.5, 3e9])
    assert len(raw) == 32
    assert unpack(raw, expected=3) == (12.25, (1.0, -2.5, 3e9))
    with pytest.raises(FeatureError, match="holds 3 features, expected 4"):
        unpack(raw, expected=4)
    with pytest.raises(FeatureError, match="not a float64 array"):
        unpack(b"abc")


def test_keys_carry_version_and_fingerprint() -> None:
    key = RedisLayout("t1").feature_key(FRAUD_FEATURES, "merchant", "m9")
    assert key == f"t1:f:fraud:v1:{FRAUD_FEATURES.fingerprint[:12]}:merchant:m9"
