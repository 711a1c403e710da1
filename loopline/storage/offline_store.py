"""The offline store: labeled examples as Parquet files partitioned by hour.

The labeled-log dataflow (streams) writes it; the trainer reads it. Both use
only this module, so the layout is defined once::

    <root>/labeled/date=YYYY-MM-DD/hour=HH/<name>.parquet

- The partition is the UTC hour of the example's ``event_time`` (the time the
  scored event happened, not when its label arrived): a late label lands in an
  old partition as a new file, and a training window selects whole hours.
- Columns are exactly :data:`LABELED_SCHEMA` (the :class:`LabeledExample`
  fields; ``features`` is ``list<double>`` in the feature set's
  ``model_features`` order, ``entities`` and ``feature_status`` are
  ``map<string, string>``).
- Files are written under a name starting with ``.`` and renamed into place
  (:func:`write_examples`), and readers skip names starting with ``.`` or
  ``_``, so no partial file is ever read. A writer that names files
  deterministically (for example by the snapshot epoch it flushes) rewrites the
  same file after a restart instead of adding a duplicate; readers still drop
  repeated ``request_id`` values, keeping the latest ``labeled_at_ms``.

>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> ex = LabeledExample(request_id="r1", event_id="e1", model_name="fraud",
...     model_version="3", fingerprint="f" * 64, entities={"card": "c1"},
...     features=[1.0, 2.0], score=0.25, label=1, event_time=1_700_000_000_000,
...     labeled_at_ms=1_700_000_060_000)
>>> [p.relative_to(root).as_posix() for p in write_examples(root, [ex], "batch-1")]
['labeled/date=2023-11-14/hour=22/batch-1.parquet']
>>> [(hour_start_ms(p), p.name) for p in partitions(root)]
[(1699999200000, 'hour=22')]
>>> read_examples(data_files(partitions(root)[0])[0]) == [ex]
True
>>> read_table(data_files(partitions(root)[0])[0], ["label"]).column("label").to_pylist()
[1.0]
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from loopline.contracts.errors import SchemaError
from loopline.contracts.schemas import LabeledExample
from loopline.storage.files import atomic_replace

LABELED_DIR = "labeled"
HOUR_MS = 3_600_000

LABELED_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("fingerprint", pa.string(), nullable=False),
        pa.field("entities", pa.map_(pa.string(), pa.string()), nullable=False),
        pa.field("features", pa.list_(pa.float64()), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        # float64 for every task (binary labels are 0.0/1.0); files written before
        # regression existed hold int8, which reading casts (see read_table).
        pa.field("label", pa.float64(), nullable=False),
        pa.field("event_time", pa.int64(), nullable=False),
        pa.field("labeled_at_ms", pa.int64(), nullable=False),
        pa.field("resolution", pa.string(), nullable=False),
        pa.field("arm", pa.string(), nullable=False),
        # Null in files written before it existed: read as all features fresh.
        pa.field("feature_status", pa.map_(pa.string(), pa.string()), nullable=True),
    ]
)

_PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})$")


def partition_of(event_time_ms: int) -> str:
    """The partition (relative to ``<root>/labeled``) holding an event time.

    >>> partition_of(1_700_000_000_000)
    'date=2023-11-14/hour=22'
    """
    t = dt.datetime.fromtimestamp(event_time_ms / 1000, tz=dt.UTC)
    return f"date={t:%Y-%m-%d}/hour={t:%H}"


def partition_dir(root: str | Path, event_time_ms: int) -> Path:
    """The directory of the partition holding ``event_time_ms``."""
    return Path(root) / LABELED_DIR / partition_of(event_time_ms)


def hour_start_ms(partition: Path) -> int:
    """The first millisecond a partition directory covers (it covers one hour)."""
    rel = f"{partition.parent.name}/{partition.name}"
    m = _PARTITION.match(rel)
    if m is None:
        raise SchemaError(f"not an offline-store partition: {partition}")
    day = dt.datetime.strptime(m.group(1), "%Y-%m-%d").replace(tzinfo=dt.UTC)
    return int(day.timestamp() * 1000) + int(m.group(2)) * HOUR_MS


def partitions(
    root: str | Path, start_ms: int | None = None, end_ms: int | None = None
) -> list[Path]:
    """Partition directories, oldest first, overlapping ``[start_ms, end_ms)``."""
    base = Path(root) / LABELED_DIR
    if not base.is_dir():
        return []
    out: list[tuple[int, Path]] = []
    for day in base.iterdir():
        if not day.is_dir() or not day.name.startswith("date="):
            continue
        for hour in day.iterdir():
            if not hour.is_dir() or not _PARTITION.match(f"{day.name}/{hour.name}"):
                continue
            t0 = hour_start_ms(hour)
            if start_ms is not None and t0 + HOUR_MS <= start_ms:
                continue
            if end_ms is not None and t0 >= end_ms:
                continue
            out.append((t0, hour))
    return [p for _, p in sorted(out)]


def data_files(partition: Path) -> list[Path]:
    """The complete Parquet files of a partition (in-flight temporaries are skipped)."""
    return sorted(
        p
        for p in partition.iterdir()
        if p.suffix == ".parquet" and not p.name.startswith((".", "_")) and p.is_file()
    )


def to_table(examples: Sequence[LabeledExample]) -> pa.Table:
    """Examples as a table with exactly :data:`LABELED_SCHEMA`."""
    columns = {f.name: [getattr(e, f.name) for e in examples] for f in LABELED_SCHEMA}
    columns["entities"] = [list(e.entities.items()) for e in examples]
    columns["feature_status"] = [list(e.feature_status.items()) for e in examples]
    return pa.Table.from_pydict(columns, schema=LABELED_SCHEMA)


def from_table(table: pa.Table) -> list[LabeledExample]:
    """The examples of a table written with :data:`LABELED_SCHEMA`."""
    rows = table.to_pylist()
    for row in rows:
        row["entities"] = dict(row["entities"])
        row["feature_status"] = dict(row["feature_status"] or ())
    return [LabeledExample(**row) for row in rows]


def read_table(path: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """One Parquet file of the store, cast to :data:`LABELED_SCHEMA` (older int8 labels too).

    Tables from files of different ages then concatenate: each column has one type.
    """
    return pq.read_table(path, columns=list(columns) if columns else None, schema=LABELED_SCHEMA)


def read_examples(path: str | Path) -> list[LabeledExample]:
    """Every example in one Parquet file of the store."""
    return from_table(read_table(path))


def write_examples(root: str | Path, examples: Iterable[LabeledExample], name: str) -> list[Path]:
    """Write examples into their hour partitions as ``<name>.parquet``, atomically.

    Each file is written to a hidden temporary, fsynced and renamed, so a
    reader sees all of it or none of it. Writing the same ``name`` again
    replaces the file (idempotent retries). Returns the files written.
    """
    if not name or "/" in name or name.startswith((".", "_")):
        raise SchemaError(f"invalid offline-store file name {name!r}")
    groups: dict[str, list[LabeledExample]] = defaultdict(list)
    for e in examples:
        groups[partition_of(e.event_time)].append(e)
    written = []
    for part, rows in sorted(groups.items()):
        directory = Path(root) / LABELED_DIR / part
        directory.mkdir(parents=True, exist_ok=True)
        final = directory / f"{name}.parquet"
        with atomic_replace(final) as tmp:
            pq.write_table(to_table(rows), tmp)
        written.append(final)
    return written
