"""gRPC inference server: online features from Redis, ONNX models, hot swap.

Layers, each a small module:

- :mod:`~loopline.serving.core` -- the transport-agnostic inference core
  (validation, one Redis MGET through :mod:`~loopline.serving.feature_store`,
  per-feature status in :mod:`~loopline.serving.features`, assembly, ORT);
- :mod:`~loopline.serving.model`, :mod:`~loopline.serving.model_slot`,
  :mod:`~loopline.serving.model_manager`, :mod:`~loopline.serving.model_follower`
  -- loading, checking and hot-swapping model versions;
- :mod:`~loopline.serving.v1_api`, :mod:`~loopline.serving.oip_api` -- the two
  APIs over the core; :mod:`~loopline.serving.status` -- errors to status codes;
- :mod:`~loopline.serving.grpc_server` -- one server process;
  :mod:`~loopline.serving.supervisor` -- several sharing a port;
  :mod:`~loopline.serving.commands` -- ``loopline run serve``;
- :mod:`~loopline.serving.prediction_log`, :mod:`~loopline.serving.metrics`.
"""
