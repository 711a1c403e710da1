"""Request messages for serving tests (Loopline v1 and OIP v2) and a reader for OIP answers."""

from __future__ import annotations

from typing import Any

import numpy as np

from loopline.oip import grpc_predict_v2_pb2 as oip
from loopline.serving.oip_api import encode_bytes_tensor
from loopline.v1 import inference_pb2 as pb

Tensor = oip.ModelInferRequest.InferInputTensor


def predict_request(**kw: Any) -> pb.PredictRequest:
    """A v1 Predict for card c1 at merchant m1, amount 42; ``kw`` replaces any field."""
    base = {"entities": {"card_id": "c1", "merchant_id": "m1"}, "fields": {"amount": 42.0}}
    return pb.PredictRequest(**{**base, **kw})


def fp32_tensor_request(rows: np.ndarray, raw: bool = True, **kw: Any) -> oip.ModelInferRequest:
    """An OIP v2 ModelInfer with the feature matrix ``rows`` as its one FP32 input.

    ``raw`` sends the values as raw bytes, otherwise in the tensor's typed contents.
    """
    t = Tensor(name="input", datatype="FP32", shape=rows.shape)
    req = oip.ModelInferRequest(model_name="fraud", inputs=[t], **kw)
    if raw:
        req.raw_input_contents.append(rows.astype("<f4").tobytes())
    else:
        req.inputs[0].contents.fp32_contents.extend(rows.ravel().tolist())
    return req


def oip_entity_request(
    cards: list[bytes], merchants: list[bytes], amounts: list[float]
) -> oip.ModelInferRequest:
    """An OIP v2 ModelInfer request naming fraud entities (features looked up online)."""
    n = len(cards)
    return oip.ModelInferRequest(
        model_name="fraud",
        inputs=[
            Tensor(name="card_id", datatype="BYTES", shape=[n]),
            Tensor(name="merchant_id", datatype="BYTES", shape=[n]),
            Tensor(name="amount", datatype="FP64", shape=[n]),
        ],
        raw_input_contents=[
            encode_bytes_tensor(cards),
            encode_bytes_tensor(merchants),
            np.array(amounts, dtype="<f8").tobytes(),
        ],
    )


def outputs_by_name(resp: oip.ModelInferResponse) -> dict[str, tuple[Any, bytes]]:
    """Each output of an OIP answer with its raw contents, by the output's name."""
    return {o.name: (o, raw) for o, raw in zip(resp.outputs, resp.raw_output_contents, strict=True)}
