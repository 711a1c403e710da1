"""The prediction log record: the contract's exact bytes, built the fast way."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
from serving_support import card_values, make_core

from loopline.contracts.errors import ConfigError, SchemaError
from loopline.contracts.schemas import PredictionLog, decode, encode
from loopline.contracts.settings import ServingSettings
from loopline.serving.prediction_log import encode_prediction, prediction_log_overrides
from loopline.serving.requests import PredictInput


def test_the_fast_encoding_is_the_contract_encoding(tmp_path) -> None:
    kit = make_core(tmp_path)
    kit.store.put("card", "c1", card_values(), time.time())
    fresh = kit.core.predict(PredictInput({"card_id": "c1", "merchant_id": "m1"}, {"amount": 3.0}))
    assert fresh.degraded  # the merchant is unknown
    for p in (
        fresh,
        kit.core.predict(
            PredictInput({"card_id": "c1", "merchant_id": "m1"}, {"amount": 3.0}, request_id="r2")
        ),
    ):
        names = list(p.model.manifest.feature_names)
        raw = encode_prediction(
            p,
            feature_set="fraud",
            event_time_ms=17,
            event_id="e1",
            feature_names=names,
            served_at_ms=18,
        )
        expected = PredictionLog(
            request_id=p.request_id,
            model_name="fraud",
            model_version="1",
            feature_set="fraud",
            fingerprint=p.model.manifest.fingerprint,
            entities={"card_id": "c1", "merchant_id": "m1"},
            features=p.features,
            score=p.score,
            event_time=17,
            served_at_ms=18,
            event_id="e1",
            feature_status={
                n: s.value for n, s in zip(names, p.statuses, strict=True) if s.value != "ok"
            },
        )
        # The same JSON as the contract's encoder (float spelling may differ).
        assert json.loads(raw) == json.loads(encode(expected))
        assert decode(PredictionLog, raw) == expected
    assert decode(PredictionLog, raw).feature_status["merchant.txn_count_1h"] == "missing"


def test_the_log_buffers_through_a_broker_restart_and_refuses_a_timeout_of_zero() -> None:
    conf = ServingSettings(prediction_log_timeout_s=150.0)
    assert prediction_log_overrides(conf)["message.timeout.ms"] == 150_000
    with pytest.raises(ConfigError, match=r"serving\.prediction_log_timeout_s must be > 0"):
        prediction_log_overrides(ServingSettings(prediction_log_timeout_s=0))


def test_a_non_finite_value_is_refused_as_the_contract_refuses_it(tmp_path) -> None:
    kit = make_core(tmp_path)
    p = kit.core.predict(PredictInput({"card_id": "c1", "merchant_id": "m1"}, {"amount": 3.0}))
    names = list(p.model.manifest.feature_names)

    def encoded(q):
        return encode_prediction(
            q,
            feature_set="fraud",
            event_time_ms=1,
            event_id="",
            feature_names=names,
            served_at_ms=2,
        )

    assert json.loads(encoded(p))["score"] == p.score
    bad_feature = dataclasses.replace(p, features=[float("nan"), *p.features[1:]])
    for bad in (dataclasses.replace(p, score=float("inf")), bad_feature):
        with pytest.raises(SchemaError, match="non-finite"):
            encoded(bad)
