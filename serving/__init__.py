"""gRPC inference server: online features from Redis, ONNX models, hot swap.

Layers, each a small module:

- :mod:`~loopline.serving.core` -- the transport-agnostic inference core,
  orchestrating: request checks (:mod:`~loopline.serving.requests`), one
  Redis MGET and the vector (:mod:`~loopline.serving.online_features` over
  :mod:`~loopline.serving.feature_store` and :mod:`~loopline.serving.features`),
  the answering model (:mod:`~loopline.serving.model_slot`), canary and shadow
  arms (:mod:`~loopline.serving.rollout`, :mod:`~loopline.serving.shadow`);
- :mod:`~loopline.serving.model`, :mod:`~loopline.serving.model_slot`,
  :mod:`~loopline.serving.model_manager`, :mod:`~loopline.serving.model_follower`
  -- loading, checking and hot-swapping model versions;
- :mod:`~loopline.serving.v1_api`, :mod:`~loopline.serving.oip_api` -- the two
  APIs over the core; :mod:`~loopline.serving.status` -- errors to status codes;
- :mod:`~loopline.serving.grpc_server` -- one server process;
  :mod:`~loopline.serving.supervisor` -- several sharing a port;
  :mod:`~loopline.serving.commands` -- ``loopline run serve``;
- :mod:`~loopline.serving.prediction_log` (answers to Kafka, through
  :mod:`~loopline.serving.batch_worker`), :mod:`~loopline.serving.metrics`.
"""
