"""The minimal Predict handler the serving benchmarks compare against: the same work, nothing else.

One redis-py GET of the card's packed features, an onnxruntime run, a
response with the score (no validation, no merchant, no log, no metrics).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from loopline.v1 import inference_pb2 as pb

# A card's packed value: its timestamp, then its 16 features (the model's first 16).
_CARD = struct.Struct("<17d")


def minimal_handler(store: Any, session: Any, card_prefix: str) -> Callable[[Any], Any]:
    """``PredictRequest -> PredictResponse`` over a redis-py client and an ORT session."""
    unpack = _CARD.unpack

    def handle(request: Any) -> Any:
        raw = store.get(card_prefix + request.entities["card_id"])
        x = np.zeros((1, 20), dtype=np.float32)
        if raw is not None:
            x[0, :16] = unpack(raw)[1:]
        x[0, 16] = request.fields["amount"]
        score = session.run(["probabilities"], {"input": x})[0][0, 1]
        return pb.PredictResponse(score=float(score))

    return handle
