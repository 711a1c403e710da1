"""The Feast side of ``benchmarks/peer_feast.py``, run in the Feast venv (never in Loopline's).

It reads one JSON command per line on stdin and answers one JSON line on
stdout (Feast's own output goes to stderr):

- ``setup``: write a Feast repo (``feature_store.yaml``: Redis online store,
  file offline store), the feature values as Parquet files, ``apply`` the
  entities and feature views and ``materialize`` them into Redis;
- ``fetch``: one caller, ``get_online_features`` for one entity row at a time
  (card and merchant), for ``seconds``: the latencies;
- ``predict``: the same, then the model's vector (``feast_vector.py``) and an
  onnxruntime run in the caller: the latencies;
- ``parity``: the values and scores for given requests, to check both sides
  agree;
- ``teardown``: delete the project's keys from Redis.

Only the standard library, Feast, pandas, numpy and onnxruntime are imported.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource
from feast.types import Float64, String
from feast_vector import vector

WARMUP = 200


class FeastSide:
    def __init__(self, cmd: dict[str, Any]) -> None:
        root = Path(cmd["dir"])
        root.mkdir(parents=True, exist_ok=True)
        self.project = cmd["project"]
        (root / "feature_store.yaml").write_text(
            f"project: {self.project}\n"
            f"registry: {root / 'registry.db'}\n"
            "provider: local\n"
            "online_store:\n"
            "  type: redis\n"
            f'  connection_string: "{cmd["redis"]}"\n'
            # A safety net: the keys expire even if teardown never runs.
            "  key_ttl_seconds: 3600\n"
            "offline_store:\n"
            "  type: file\n"
            "entity_key_serialization_version: 3\n"
        )
        self.store = FeatureStore(repo_path=str(root))
        self.refs: list[str] = cmd["features"]
        self.spec = cmd["spec"]
        self.key_fields: dict[str, str] = cmd["key_fields"]
        self.requests: list[list[Any]] = cmd["requests"]
        model = cmd["model"]
        so = ort.SessionOptions()
        # The options Loopline serving runs with (serving/model.py), sent by the benchmark.
        for name, value in model["options"].items():
            setattr(so, name, type(getattr(so, name))(value))
        self.session = ort.InferenceSession(model["path"], so, providers=["CPUExecutionProvider"])
        self.input_name = model["input"]
        self.outputs = [model["output"]]
        self.root = root
        self._apply_and_materialize(cmd["rows"], cmd["now"])

    def _apply_and_materialize(self, rows: dict[str, Any], now: float) -> None:
        ts = datetime.fromtimestamp(now, tz=UTC)
        objects: list[Any] = []
        for view, spec in rows.items():
            key = self.key_fields[view]
            frame = pd.DataFrame(spec["values"], columns=spec["names"])
            frame.insert(0, key, spec["ids"])
            frame["event_timestamp"] = ts
            path = self.root / f"{view}.parquet"
            frame.to_parquet(path)
            entity = Entity(name=view, join_keys=[key])
            source = FileSource(
                name=f"{view}_source", path=str(path), timestamp_field="event_timestamp"
            )
            fv = FeatureView(
                name=view,
                entities=[entity],
                ttl=timedelta(days=1),
                schema=[Field(name=key, dtype=String)]
                + [Field(name=n, dtype=Float64) for n in spec["names"]],
                source=source,
                online=True,
            )
            objects += [entity, fv]
        self.store.apply(objects)
        self.store.materialize(
            start_date=ts - timedelta(hours=1), end_date=ts + timedelta(minutes=1)
        )

    def _row(self, req: list[Any]) -> dict[str, str]:
        return {self.key_fields[v]: req[i] for i, v in enumerate(self.key_fields)}

    def get(self, req: list[Any]) -> dict[str, Any]:
        """Feast's in-process retrieval for one request's entities, as plain values."""
        got = self.store.get_online_features(
            features=self.refs, entity_rows=[self._row(req)], full_feature_names=True
        ).to_dict()
        return {k: v[0] for k, v in got.items()}

    def score(self, req: list[Any], now: float) -> tuple[float, dict[str, Any], list[float]]:
        """Retrieval, the model's vector and one onnxruntime run, in the caller."""
        values = self.get(req)
        row = vector(self.spec, values, {"amount": req[-1]}, now)
        x = np.asarray([row], dtype=np.float32)
        score = float(self.session.run(self.outputs, {self.input_name: x})[0][0, 1])
        return score, values, row

    def timed(self, op: str, seconds: float) -> list[float]:
        def call(req: list[Any]) -> object:
            return self.get(req) if op == "fetch" else self.score(req, time.time())

        reqs = self.requests
        for i in range(WARMUP):
            call(reqs[i % len(reqs)])
        out: list[float] = []
        end = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < end:
            t = time.perf_counter()
            call(reqs[i % len(reqs)])
            out.append(time.perf_counter() - t)
            i += 1
        return out

    def parity(self, requests: list[list[Any]]) -> list[dict[str, Any]]:
        out = []
        for req in requests:
            score, values, row = self.score(req[:-1], req[-1])
            out.append({"score": score, "values": values, "vector": row})
        return out

    def teardown(self) -> int:
        """Delete the project's Redis keys (Feast's teardown), and count what is left."""
        self.store.teardown()
        client = self.store._get_provider().online_store._get_client(self.store.config.online_store)
        return sum(1 for _ in client.scan_iter(match=b"*" + self.project.encode()))


def main() -> None:
    # The protocol owns stdout; anything Feast prints goes to stderr.
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    side: FeastSide | None = None
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        t0 = time.perf_counter()
        if op == "setup":
            side = FeastSide(cmd)
            answer: dict[str, Any] = {"ok": True}
        elif side is None:
            answer = {"error": f"{op} before setup"}
        elif op in ("fetch", "predict"):
            answer = {"latencies": side.timed(op, cmd["seconds"])}
        elif op == "parity":
            answer = {"rows": side.parity(cmd["requests"])}
        elif op == "teardown":
            answer = {"left": side.teardown()}
        else:
            answer = {"error": f"unknown op {op!r}"}
        answer["took_s"] = time.perf_counter() - t0
        proto.write(json.dumps(answer) + "\n")
        proto.flush()
        if op == "teardown":
            break


if __name__ == "__main__":
    main()
