"""The features flow's lock-free freshness histogram adds up across worker threads."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry

from loopline.streams.features.metrics import feature_metrics


def test_thread_parts_sum_into_one_prometheus_histogram() -> None:
    registry = CollectorRegistry()
    hist = feature_metrics(registry).freshness_seconds

    def work(values: list[float]) -> None:
        part = hist.part()
        for v in values:
            part.observe(v)

    threads = [
        threading.Thread(target=work, args=([0.004] * 1000,)),
        threading.Thread(target=work, args=([0.2] * 500 + [999.0],)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    name = "loopline_features_freshness_seconds"
    sample = registry.get_sample_value
    assert sample(f"{name}_count") == 1501
    assert sample(f"{name}_bucket", {"le": "0.005"}) == 1000
    assert sample(f"{name}_bucket", {"le": "0.25"}) == 1500
    assert sample(f"{name}_bucket", {"le": "+Inf"}) == 1501
    assert abs(sample(f"{name}_sum") - (4.0 + 100.0 + 999.0)) < 1e-6
    assert feature_metrics(registry) is feature_metrics(registry)  # one per registry
