"""Client threads calling a running server's Predict without pause, for tests under load."""

from __future__ import annotations

import threading
from typing import Self

import grpc

from loopline.v1 import inference_pb2 as pb
from loopline.v1 import inference_pb2_grpc as pb_grpc


class PredictLoad:
    """Calls Predict from ``clients`` threads while the ``with`` block runs; every failure is kept.

    A subclass says what each call asks (``request``) and what to keep of each
    answer (``record``, called under ``lock`` so counters stay consistent).
    """

    def __init__(self, port: int, clients: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(clients)]

    def request(self, client: int, call: int) -> pb.PredictRequest:
        """The ``call``-th request (from 0) of thread number ``client``."""
        raise NotImplementedError

    def record(self, request: pb.PredictRequest, response: pb.PredictResponse) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _run(self, client: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = pb_grpc.InferenceStub(channel)
            call = 0
            while not self.stop.is_set():
                request = self.request(client, call)
                call += 1
                try:
                    response = stub.Predict(request, timeout=5)
                except grpc.RpcError as e:
                    with self.lock:
                        self.failures.append(f"{e.code()}: {e.details()}")
                    continue
                with self.lock:
                    self.record(request, response)
