"""Labeled examples to the labeled topic and the offline store, once each.

Engine-neutral (confluent-kafka and the filesystem, no dataflow engine). One
:class:`LabeledWriter` per output partition ("writer") buffers the examples
of a recovery epoch; the engine calls :meth:`LabeledWriter.flush` when it
snapshots the epoch, then stores :meth:`LabeledWriter.state`. A flush is:

1. an *intent* record (``<store>/_labels/writer-<part>.json``: flush number,
   start time, hour partitions), written atomically;
2. one Kafka **transaction** with every example (key ``request_id``, header
   ``loopline-labels-flush: <part>:<seq>``), committed and so delivery checked
   (readers use ``read_committed``: an aborted or unfinished flush is never seen);
3. one Parquet file per touched hour through
   :func:`~loopline.storage.offline_store.write_examples` (atomic), named
   ``lbl-<part>-<seq>`` after the flush number.

Restart without duplicates. The engine restores the state of the last
*completed* snapshot: the next flush number ``S`` and ids still to suppress.
Anything written after that snapshot is reconciled before writing again:

- a new producer with the same ``transactional.id`` aborts an unfinished
  transaction (and fences the dead process);
- the intent names the last flush; if its Parquet files are missing or
  incomplete although its transaction committed (a crash between steps 2 and
  3), the transaction is read back from the topic and its files are written;
- the ids in the files of flushes ``>= S`` are already in both outputs: when
  the replay emits them again they are suppressed (counted as replayed), and
  new flushes continue after the highest flush number found.

So the offline store holds each ``request_id`` once (raw rows, across files)
and the labeled topic carries it once, even after ``kill -9`` anywhere.
Without recovery (``--no-recovery``) the state is empty: every stored id of
the writer is suppressed, so a re-run from the beginning adds nothing twice
(at the cost of reading the writer's ids from the store at start).

>>> file_name("000", 42)
'lbl-000-000000000042'
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from loopline.contracts.errors import DeliveryError, IntegrityError, StackError
from loopline.contracts.schemas import LabeledExample, decode, encode
from loopline.storage.files import atomic_write
from loopline.storage.offline_store import data_files, partition_of, partitions, write_examples
from loopline.streams.common.kafka_io import list_partitions
from loopline.streams.labels.config import LabelsFlowConfig

FLUSH_HEADER = "loopline-labels-flush"
INTENT_DIR = "_labels"
STATE_FORMAT = "labels-writer-1"
_FILE = re.compile(r"^lbl-(\d+)-(\d{12})\.parquet$")
# Producer timestamps come from this host's wall clock, which may step back a little.
_CLOCK_SKEW_MS = 60_000

# One resolved example and the wall-clock second the join resolved it (for the latency metric).
Resolved = tuple[LabeledExample, float]


def file_name(part: str, seq: int) -> str:
    """The offline-store file name (without ``.parquet``) of a writer's flush."""
    return f"lbl-{part}-{seq:012d}"


@dataclass(frozen=True)
class FlushResult:
    seq: int
    examples: list[Resolved]
    files: list[Path]
    committed_at: float  # wall clock, seconds


@dataclass
class ReconcileReport:
    """What a writer found from before its restart."""

    next_seq: int
    suppressed: int  # ids already committed after the restored snapshot
    repaired: list[Path] = field(default_factory=list)  # files rewritten from the topic


class LabeledWriter:
    """One output partition; see the module docstring."""

    def __init__(self, cfg: LabelsFlowConfig, part: str, resume: Any = None) -> None:
        self._cfg = cfg
        self.part = part
        self._root = Path(cfg.store_root)
        self._timeout_s = cfg.transaction_timeout_s
        self._buffer: list[Resolved] = []
        self._failures: list[str] = []
        conf = dict(cfg.producer)
        conf["transactional.id"] = f"{cfg.labeled_topic}.labels-writer-{part}"
        conf["transaction.timeout.ms"] = int(self._timeout_s * 1000)
        conf["message.timeout.ms"] = min(
            int(conf.get("message.timeout.ms", 30_000)), conf["transaction.timeout.ms"]
        )
        self._producer = Producer(conf)
        try:
            # Aborts the transaction a killed predecessor left open, and fences it.
            self._producer.init_transactions(self._timeout_s)
        except KafkaException as e:
            raise StackError(f"labels writer {part}: cannot start its transactions: {e}") from e
        next_seq, suppress = _restore(resume)
        self._next_seq = next_seq
        self._suppress = set(suppress)
        self.reconciled = self._reconcile()

    # -- writing --------------------------------------------------------------------
    def add(self, items: Iterable[Resolved]) -> int:
        """Buffer examples for the next flush; returns how many were suppressed (replayed)."""
        replayed = 0
        suppress = self._suppress
        for item in items:
            rid = item[0].request_id
            if suppress and rid in suppress:
                suppress.discard(rid)
                replayed += 1
                continue
            self._buffer.append(item)
        return replayed

    def flush(self) -> FlushResult | None:
        """Commit the buffered examples to the topic, then to the offline store."""
        if not self._buffer:
            return None
        seq = self._next_seq
        examples = [e for e, _ in self._buffer]
        hours = sorted({partition_of(e.event_time) for e in examples})
        self._write_intent(
            {"seq": seq, "since_ms": int(time.time() * 1000), "hours": hours, "rows": len(examples)}
        )
        self._send(examples, f"{self.part}:{seq}".encode())
        files = write_examples(self._root, examples, file_name(self.part, seq))
        self._next_seq = seq + 1
        flushed, self._buffer = self._buffer, []
        return FlushResult(seq, flushed, files, time.time())

    def state(self) -> tuple[str, int, tuple[str, ...]]:
        """Immutable resume state: the next flush number and ids still to suppress."""
        return (STATE_FORMAT, self._next_seq, tuple(sorted(self._suppress)))

    def close(self) -> None:
        self.flush()

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failures.append(str(err))

    def _send(self, examples: list[LabeledExample], tag: bytes) -> None:
        producer, topic = self._producer, self._cfg.labeled_topic
        headers: list[tuple[str, str | bytes | None]] = [(FLUSH_HEADER, tag)]
        try:
            producer.begin_transaction()
            for e in examples:
                value, key = encode(e), e.request_id.encode()
                while True:
                    try:
                        producer.produce(
                            topic, value, key, headers=headers, on_delivery=self._on_delivery
                        )
                        break
                    except BufferError:
                        producer.poll(0.05)  # local queue full: let deliveries drain
            producer.commit_transaction(self._timeout_s)
        except KafkaException as e:
            with contextlib.suppress(KafkaException):
                producer.abort_transaction(self._timeout_s)
            raise DeliveryError(
                f"labels writer {self.part}: transaction of {len(examples)} example(s) to "
                f"{topic} failed and was aborted: {e}"
            ) from e
        failures, self._failures = self._failures, []
        if failures:  # commit_transaction raises first; never ignore a failed delivery
            raise DeliveryError(f"labels writer {self.part}: {'; '.join(failures[:3])}")

    # -- restart --------------------------------------------------------------------
    def _reconcile(self) -> ReconcileReport:
        start = self._next_seq
        files = self._files_since(start)
        report = ReconcileReport(next_seq=start, suppressed=0)
        intent = self._read_intent()
        if intent is not None and int(intent["seq"]) >= start:
            seq = int(intent["seq"])
            present = {_partition_of_file(p) for p in files.get(seq, [])}
            if set(intent["hours"]) - present:
                examples = self._read_back(seq, int(intent["since_ms"]))
                if examples:
                    name = file_name(self.part, seq)
                    files[seq] = write_examples(self._root, examples, name)
                    report.repaired = list(files[seq])
                elif seq in files:
                    raise IntegrityError(
                        f"labels writer {self.part}: flush {seq} has Parquet files but no "
                        f"committed transaction on {self._cfg.labeled_topic}; the offline store "
                        "and the topic disagree (was the topic recreated?)"
                    )
        committed: set[str] = set()
        for paths in files.values():
            for path in paths:
                ids = pq.read_table(path, columns=["request_id"]).column(0).to_pylist()
                committed.update(ids)
        self._suppress |= committed
        report.suppressed = len(committed)
        if files:
            self._next_seq = max(start, max(files) + 1)
        report.next_seq = self._next_seq
        return report

    def _files_since(self, start: int) -> dict[int, list[Path]]:
        found: dict[int, list[Path]] = {}
        for partition in partitions(self._root):
            for path in data_files(partition):
                m = _FILE.match(path.name)
                if m is None or m.group(1) != self.part:
                    continue
                seq = int(m.group(2))
                if seq >= start:
                    found.setdefault(seq, []).append(path)
        return found

    def _read_back(self, seq: int, since_ms: int) -> list[LabeledExample]:
        """The examples of flush ``seq`` that the topic holds as committed (maybe none)."""
        topic, tag = self._cfg.labeled_topic, f"{self.part}:{seq}".encode()
        conf = dict(self._cfg.consumer)
        conf.update(
            {
                "group.id": f"{conf.get('group.id', 'labels')}-reconcile-{uuid.uuid4().hex[:8]}",
                "enable.partition.eof": True,
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        timeout = self._timeout_s + 30.0
        consumer = Consumer(conf)
        try:
            ids = list_partitions(self._cfg.consumer, topic)
            probe = [TopicPartition(topic, p, max(since_ms - _CLOCK_SKEW_MS, 0)) for p in ids]
            starts = consumer.offsets_for_times(probe, timeout=timeout)
            ends = {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
                for p in ids
            }
            todo = {tp.partition for tp in starts if 0 <= tp.offset < ends[tp.partition]}
            consumer.assign([tp for tp in starts if tp.partition in todo])
            found: dict[str, LabeledExample] = {}
            deadline = time.monotonic() + timeout
            while todo:
                if time.monotonic() > deadline:
                    raise StackError(
                        f"labels writer {self.part}: could not read {topic} partitions "
                        f"{sorted(todo)} to their end within {timeout:.0f} s (an open "
                        "transaction of another writer?); restart to retry"
                    )
                for msg in consumer.consume(500, 0.2):
                    err = msg.error()
                    partition, offset = msg.partition() or 0, msg.offset() or 0
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            if offset >= ends[partition]:
                                todo.discard(partition)
                            continue
                        if err.fatal() or err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                            raise StackError(f"reading back {topic}: {err}")
                        continue
                    if offset >= ends[partition] - 1:
                        todo.discard(partition)
                    if (FLUSH_HEADER, tag) in (msg.headers() or []):
                        example = decode(LabeledExample, msg.value() or b"")
                        found[example.request_id] = example
                positions = consumer.position([TopicPartition(topic, p) for p in todo])
                for tp in positions:
                    if tp.offset >= ends[tp.partition]:
                        todo.discard(tp.partition)
            return list(found.values())
        finally:
            consumer.close()

    def _intent_path(self) -> Path:
        return self._root / INTENT_DIR / f"writer-{self.part}.json"

    def _read_intent(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self._intent_path().read_text()))
        except FileNotFoundError:
            return None

    def _write_intent(self, intent: dict[str, Any]) -> None:
        path = self._intent_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(intent))


def _restore(resume: Any) -> tuple[int, tuple[str, ...]]:
    if resume is None:
        return 0, ()
    if not (isinstance(resume, tuple) and len(resume) == 3 and resume[0] == STATE_FORMAT):
        raise IntegrityError(
            "labels writer state has an unknown format: start with a fresh recovery directory"
        )
    return int(resume[1]), tuple(resume[2])


def _partition_of_file(path: Path) -> str:
    return f"{path.parent.parent.name}/{path.parent.name}"
