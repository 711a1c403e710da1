"""Where historical events and outcomes come from: JSONL/Parquet files or a Kafka topic.

A source is written ``topic`` (the default topic for that kind of record),
``topic:NAME`` (a named topic) or a file path (``.jsonl``/``.ndjson``/``.json``
with one JSON object per line, or ``.parquet`` with one column per field).

>>> Source.parse("topic"), Source.parse("topic:loopline.events")
(Source(kind='topic', name=''), Source(kind='topic', name='loopline.events'))
>>> Source.parse("history.parquet").kind
'file'
>>> from loopline.contracts.schemas import Outcome
>>> decode_rows(Outcome, [b'{"event_id":"e1"}', b'{"event_id":"e2","label":1,'
...     b'"event_time":5}'])[1]
{'invalid': 1}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from loopline.contracts.errors import ConfigError, SchemaError
from loopline.contracts.schemas import decode

T = TypeVar("T")
JSON_SUFFIXES = {".jsonl", ".ndjson", ".json"}


@dataclass(frozen=True)
class Source:
    kind: str  # "topic" | "file"
    name: str  # topic name ("" = the default topic) or file path

    @staticmethod
    def parse(text: str) -> Source:
        if text == "topic":
            return Source("topic", "")
        if text.startswith("topic:"):
            name = text.removeprefix("topic:")
            if not name:
                raise ConfigError("a topic source needs a name after 'topic:'")
            return Source("topic", name)
        path = Path(text)
        if path.suffix not in JSON_SUFFIXES | {".parquet"}:
            raise ConfigError(
                f"source {text!r}: expected 'topic', 'topic:NAME', or a .jsonl/.parquet file"
            )
        return Source("file", text)

    def describe(self, default_topic: str = "") -> str:
        if self.kind == "topic":
            return f"topic {self.name or default_topic}"
        return f"file {self.name}"


def decode_rows(
    cls: type[T], rows: Iterable[bytes | str | dict[str, Any]]
) -> tuple[list[T], dict[str, int]]:
    """Valid records and the count of rejected ones (bad rows never stop a training)."""
    out: list[T] = []
    rejected = 0
    for raw in rows:
        try:
            out.append(decode(cls, raw))
        except SchemaError:
            rejected += 1
    return out, ({"invalid": rejected} if rejected else {})


def file_rows(path: str | Path) -> Iterable[bytes | dict[str, Any]]:
    """Raw rows of a JSONL or Parquet file (timestamp columns become epoch ms)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"no such file: {p}")
    if p.suffix in JSON_SUFFIXES:
        return _jsonl(p)
    table = pq.read_table(p)
    return _epoch_ms(table).to_pylist()


def _jsonl(path: Path) -> Iterable[bytes]:
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                yield line


def _epoch_ms(table: pa.Table) -> pa.Table:
    for i, fld in enumerate(table.schema):
        if pa.types.is_timestamp(fld.type):
            ms = pc.cast(table.column(i), pa.timestamp("ms", tz=fld.type.tz)).cast(pa.int64())
            table = table.set_column(i, fld.name, ms)
    return table
