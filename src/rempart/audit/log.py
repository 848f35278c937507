"""The audit log's writer: group commit, sequencing, the Merkle head, checkpoints.

Reads of personal data call `append` and wait: their events join the next batch, and the data
leaves the service only once that batch is committed (fail closed: an error raises
`AuditUnavailable` and the caller returns nothing). One committer thread per process gathers
whatever requests are waiting into one transaction, so many requests share one commit.

Writes stage their events in their own transaction (`service.stage`): rows of `audit.pending`,
committed or rolled back with the write; a batch picks them up at least every 250 ms.

Each batch moves the one-row `audit.head` (size and frontier) first, so batches of every
process of the platform append in a single order, with no gap: the tree position (`seq`) is
given at commit, not at request time.

The leaf of event number `seq` is SHA-256(0x00 || event), the event's bytes being its position
and the time the log sequenced it (8 bytes each, big-endian, microseconds since the epoch),
then its canonical body (`verifier.event_leaf_hash`). The position makes two events swapped in
place detectable one by one; the sequencing time, never decreasing along the log, lets a
time window be mapped to a range of positions that a signed root vouches for.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import psycopg

from rempart.audit import events as ev
from rempart.audit.merkle import Frontier
from rempart.db import copy_binary

NODE_LEVEL = 8  # subtrees of 256 leaves and more are stored for proofs
MAX_BATCH = 4096
PENDING_POLL_SECONDS = 0.25


class SequencerClient(Protocol):
    """What the log needs of a connection to the sequencer process (`sequencer.Client`)."""

    def append(self, rows: list[bytes], *, timeout: float) -> None: ...

    def close(self) -> None: ...


class AuditUnavailable(RuntimeError):
    """The access could not be recorded, so it does not happen: nothing is returned."""


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MICROSECOND = dt.timedelta(microseconds=1)


def micros(at: dt.datetime) -> int:
    """Exact microseconds since the epoch (no float on the way)."""
    return (at - EPOCH) // MICROSECOND


def leaf_hash(seq: int, logged_us: int, body: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + struct.pack(">QQ", seq, logged_us) + body).digest()


class Record(NamedTuple):
    """An event as stored: its bytes, plus the copies of the values the questions filter on."""

    at: dt.datetime
    body: bytes
    account_id: uuid.UUID | None
    api_client_id: uuid.UUID | None
    network: str | None
    subject_id: uuid.UUID | None

    @staticmethod
    def of(event: ev.AuditEvent) -> Record:
        return Record(event.at, ev.encode(event), event.actor.account_id, event.actor.api_client_id,
                      event.network.prefix_hash, event.subject_id)  # fmt: skip


COLUMNS = "at, body, account_id, api_client_id, network, subject_id"


def columns(record: Record) -> bytes:
    """The record's columns of COPY_EVENTS after position, sequencing time and leaf, in binary
    COPY: what a batch is made of, and what a process sends the sequencer (`sequencer`), which
    adds the three."""
    return b"".join((
        copy_binary.timestamptz_us(micros(record.at)), copy_binary.bytea(record.body),
        copy_binary.uuid_or_null(record.account_id), copy_binary.uuid_or_null(record.api_client_id),
        copy_binary.text(record.network), copy_binary.uuid_or_null(record.subject_id),
    ))  # fmt: skip


_LENGTH = struct.Struct(">i")
_COLUMN_SIZES = (8, None, 16, 16, None, 16)  # fixed sizes, None for any (at, body, ids, network)


def body_of(row: bytes) -> bytes:
    """The event's bytes inside `columns(...)` output (the body is the second column)."""
    (length,) = _LENGTH.unpack_from(row, 12)
    return row[16 : 16 + length]


def checked_body(row: bytes) -> bytes:
    """`body_of`, after checking that `row` is exactly six well-formed columns (what the
    sequencer does with rows another process sent): ValueError otherwise."""
    offset = 0
    for position, size in enumerate(_COLUMN_SIZES):
        if offset + 4 > len(row):
            raise ValueError("truncated row")
        (length,) = _LENGTH.unpack_from(row, offset)
        nullable = position >= 2
        if length == -1 and nullable:
            offset += 4
            continue
        if length < 0 or (size is not None and length != size):
            raise ValueError(f"column {position} has a bad length")
        offset += 4 + length
    if offset != len(row):
        raise ValueError("row length does not add up")
    return body_of(row)


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(slots=True)
class _Waiting:
    """One caller's events, waiting for a batch. `done` is a lock held until the batch is
    decided: the cheapest way to park a thread (one futex, no condition variable)."""

    rows: list[bytes]
    done: threading.Lock = field(default_factory=_held_lock)
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class Head:
    size: int
    root: bytes


class HeadMoved(Exception):
    """Another process appended since this one last read the head: re-read and retry."""


class Tip(NamedTuple):
    """The head as a process last saw it: the tree's frontier and the last sequencing time."""

    frontier: Frontier
    logged_us: int


def append_batch(
    conn: psycopg.Connection[Any],
    rows: Sequence[bytes],
    *,
    tip: Tip | None = None,
    drain: bool = True,
    lock: bool = False,
) -> tuple[Head, Tip]:
    """Sequence staged events (when `drain`), then `rows` (`columns` of records), in one
    transaction on `conn`.

    The head's row comes before the staged rows a batch drains and the subtree hashes it
    stores. The rows an optimistic batch copies in before it can only wait on another
    transaction's row at the same (time, position), that is a batch racing it from the same
    head: that duplicate, or the deadlock it can make with a batch holding the head's lock,
    means the head moved, and is answered as such (`HeadMoved`: retry under the lock).
    * Optimistic (`tip` given, no drain): the new head is computed here and the rows copied in;
      then `audit.advance` moves the head only from the frontier this process last wrote; if
      another process moved it meanwhile, `HeadMoved` is raised and nothing was written:
      retry with `lock=True`.
    * Locked (`lock=True`, no `tip`, or a drain): the head is read FOR UPDATE first.
    Sequencing times never go back: a batch's is the later of now and the head's.
    A committer alone (the usual case) pays the COPY's round trips and one more (the head,
    the subtree hashes and the commit, pipelined). Used alone with a batch of one, this is the
    naive baseline."""
    try:
        if lock or drain or tip is None:
            frontier_bytes, head_logged = conn.execute(
                "SELECT frontier, logged_us FROM audit.head FOR UPDATE"
            ).fetchone()  # type: ignore[misc]
            tip = Tip(Frontier.from_bytes(bytes(frontier_bytes)), int(head_logged))
        all_rows: list[bytes] = []
        if drain:
            staged = conn.execute(f"DELETE FROM audit.pending RETURNING id, {COLUMNS}").fetchall()
            staged.sort(key=lambda row: row[0])
            all_rows.extend(columns(Record(at, bytes(body), *rest)) for _, at, body, *rest in staged)
        all_rows.extend(rows)
        if not all_rows:
            conn.rollback()
            return Head(tip.frontier.size, tip.frontier.root()), tip
    except BaseException:
        if not conn.closed:
            conn.rollback()
        raise
    batch = prepare_batch(tip, all_rows)
    return write_batch(conn, batch), batch.tip


class PreparedBatch(NamedTuple):
    """A batch sequenced in memory from a known head: what `write_batch` sends."""

    data: bytes  # the rows in binary COPY, with their positions, sequencing time and leaves
    nodes: list[tuple[int, int, bytes]]  # the subtree hashes it completes (level, index, hash)
    expected: bytes  # the frontier the head must still be at
    tip: Tip  # the head once it is written

    @property
    def head(self) -> Head:
        return Head(self.tip.frontier.size, self.tip.frontier.root())


def prepare_batch(tip: Tip, rows: Sequence[bytes]) -> PreparedBatch:
    """Give `rows` (`columns` of records) the positions after `tip`, hash them into the tree."""
    frontier = Frontier(tip.frontier.size, tip.frontier.hashes)  # a failed batch must not move the caller's copy
    logged_us = max(micros(dt.datetime.now(dt.UTC)), tip.logged_us)
    logged = copy_binary.timestamptz_us(logged_us)
    data: list[bytes] = [copy_binary.HEADER]
    nodes: list[tuple[int, int, bytes]] = []
    for row in rows:
        seq = frontier.size
        leaf = leaf_hash(seq, logged_us, body_of(row))
        nodes.extend(node for node in frontier.append(leaf) if node[0] >= NODE_LEVEL)
        data.append(_EVENT_FIELDS + copy_binary.int8(seq) + logged + copy_binary.bytea(leaf) + row)
    data.append(copy_binary.TRAILER)
    return PreparedBatch(b"".join(data), nodes, tip.frontier.to_bytes(), Tip(frontier, logged_us))


def write_batch(conn: psycopg.Connection[Any], batch: PreparedBatch) -> Head:
    """Copy the batch's rows in, then move the head, store the subtree hashes and commit, in
    one pipelined round trip: an optimistic batch holds the head's lock only for that round
    trip. `HeadMoved` when the head is no longer where the batch was sequenced from."""
    tip = batch.tip
    try:
        with conn.cursor().copy(COPY_EVENTS) as copy:
            copy.write(batch.data)
        with conn.pipeline():
            conn.execute(
                "SELECT audit.advance(%s, %s, %s, %s)",
                (batch.expected, tip.frontier.size, tip.frontier.to_bytes(), tip.logged_us),
            )
            if batch.nodes:
                conn.cursor().executemany(
                    "INSERT INTO audit.nodes (level, index, hash) VALUES (%s, %s, %s)", batch.nodes
                )
            conn.commit()
    except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected, psycopg.errors.UniqueViolation):
        # Serialization failure from `advance`, or a race at the same positions (see
        # `append_batch`): nothing was written.
        conn.rollback()
        raise HeadMoved from None
    except BaseException:
        if not conn.closed:
            conn.rollback()
        raise
    return batch.head


COPY_EVENTS = f"COPY audit.events (seq, logged_at, leaf, {COLUMNS}) FROM STDIN (FORMAT BINARY)"
_EVENT_FIELDS = copy_binary.count(9)


def ensure_partitions(conn: psycopg.Connection[Any], today: dt.date, *, months_ahead: int = 3) -> list[str]:
    """Monthly partitions from last month to `months_ahead` ahead (events of a month with no
    partition land in the default one, which stays correct, only slower to prune).

    Creating a partition locks the whole table: it gives up after a moment if a reader (a
    backup, a `verify`) holds it, rather than queue every append behind that reader, and is
    tried again at the next checkpoint (months ahead, there is time)."""
    created = []
    year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    for _ in range(months_ahead + 2):
        start = dt.date(year, month, 1)
        year, month = (year, month + 1) if month < 12 else (year + 1, 1)
        end = dt.date(year, month, 1)
        name = f"events_{start:%Y_%m}"
        exists = conn.execute("SELECT to_regclass(%s)", (f"audit.{name}",)).fetchone()
        if exists is not None and exists[0] is not None:
            continue
        try:
            with conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '200ms'")
                conn.execute(
                    f"CREATE TABLE audit.{name} PARTITION OF audit.events FOR VALUES FROM ('{start}') TO ('{end}')"
                )
                # Row triggers come from the parent; TRUNCATE of a partition must be refused too.
                conn.execute(
                    f"CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON audit.{name}"
                    " FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change()"
                )
            created.append(name)
        except psycopg.errors.CheckViolation:
            pass  # that month already has events in the default partition: they stay there
        except psycopg.errors.LockNotAvailable:
            break  # busy: next time
    return created


class AuditLog:
    """One per process. `append` (durable reads), `stage` (writes), `sync`, `close`."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        *,
        max_batch: int = MAX_BATCH,
        sequencer: SequencerClient | None = None,
    ) -> None:
        self._connect = connect
        self._sequencer = sequencer  # when set, reads go to the platform's sequencer process
        self._max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[_Waiting] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._after_batch: list[Callable[[Head], None]] = []
        self.batches = 0  # how many commits the committer made (for the benchmark)

    # -- reads: durable before returning ---------------------------------------------------

    def append(self, events: Iterable[ev.AuditEvent], *, timeout: float = 10.0) -> None:
        """Record events and return once they are committed; raise AuditUnavailable otherwise."""
        rows = [columns(Record.of(event)) for event in events]
        if not rows:
            return
        if self._sequencer is not None:
            self._sequencer.append(rows, timeout=timeout)
            return
        waiting = _Waiting(rows)
        with self._cond:
            if self._stopping:
                raise AuditUnavailable("the audit log is closed")
            self._ensure_thread()
            self._queue.append(waiting)
            self._cond.notify()
        if not waiting.done.acquire(timeout=timeout):
            with self._cond:  # not yet taken into a batch: withdraw it, so the log shows no access
                if waiting in self._queue:
                    self._queue.remove(waiting)
            raise AuditUnavailable("the audit log did not confirm the record in time")
        if waiting.error is not None:
            raise AuditUnavailable("the audit log refused the record") from waiting.error

    # -- writes: same transaction as the write -----------------------------------------------

    def sync(self) -> Head:
        """Sequence everything staged so far (and wait for it); returns the new head."""
        with self._connect() as conn:
            return append_batch(conn, [], lock=True)[0]

    def start(self) -> None:
        """Start the committer now (a server does, so staged events are sequenced promptly;
        with a sequencer process, that process does it)."""
        if self._sequencer is not None:
            return
        with self._cond:
            self._ensure_thread()

    def on_batch(self, callback: Callable[[Head], None]) -> None:
        """Run `callback(head)` in the committer thread after each committed batch."""
        self._after_batch.append(callback)

    def close(self) -> None:
        if self._sequencer is not None:
            self._sequencer.close()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- the committer -------------------------------------------------------------------------

    def batch_writer(self) -> BatchWriter:
        """What commits batches, on a connection of its own, with this log's after-batch work
        (the committer thread has one; so has the sequencer process)."""
        return BatchWriter(self._connect, self._after_batch)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="audit-committer", daemon=True)
            self._thread.start()

    def _take_batch(self) -> list[_Waiting]:
        """Callers in arrival order, up to `max_batch` events (a caller's events stay together)."""
        taken, count = 0, 0
        while taken < len(self._queue) and (count == 0 or count + len(self._queue[taken].rows) <= self._max_batch):
            count += len(self._queue[taken].rows)
            taken += 1
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        return batch

    def _run(self) -> None:
        writer = self.batch_writer()
        while True:
            with self._cond:
                if not self._queue and not self._stopping:
                    self._cond.wait(PENDING_POLL_SECONDS)
                if self._stopping and not self._queue:
                    break
                batch = self._take_batch()
            head: Head | None = None
            try:
                head = writer.commit(_rows(batch))
            except Exception as exc:
                for item in batch:
                    item.error = exc
            for item in batch:
                item.done.release()
            if head is not None:
                writer.after(head)
            self.batches = writer.batches
        writer.close()


class BatchWriter:
    """Commits batches on one connection, keeping the head as this process last wrote it, and
    sequencing staged writes at least every PENDING_POLL_SECONDS (not every batch)."""

    def __init__(
        self, connect: Callable[[], psycopg.Connection[Any]], after_batch: list[Callable[[Head], None]]
    ) -> None:
        self._connect = connect
        self._after_batch = after_batch
        self._conn: psycopg.Connection[Any] | None = None
        self._tip: Tip | None = None
        self._drained = 0.0
        self.batches = 0

    def drain_due(self) -> bool:
        return time.monotonic() - self._drained >= PENDING_POLL_SECONDS

    def commit(self, rows: list[bytes]) -> Head:
        """One batch (plus the staged writes when due), committed; raises when it is not."""
        drain = self.drain_due()
        try:
            if self._conn is None or self._conn.closed:
                self._conn, self._tip = self._connect(), None
            try:
                head, self._tip = append_batch(self._conn, rows, tip=self._tip, drain=drain)
            except HeadMoved:  # another process appended: take the head's lock and go again
                head, self._tip = append_batch(self._conn, rows, drain=drain, lock=True)
            if drain:
                self._drained = time.monotonic()
        except Exception as exc:
            # Retried only when the server refused a statement (a staged row the log cannot
            # take must not stop the reads). A lost connection may have lost the reply to a
            # COMMIT that happened: retrying could record the batch twice, so it fails.
            refused = isinstance(exc, psycopg.DatabaseError) and not isinstance(exc, psycopg.OperationalError)
            self.close()
            if not (drain and rows and refused):
                raise
            self._drained = time.monotonic()
            self._conn = self._connect()
            try:
                head, self._tip = append_batch(self._conn, rows, drain=False, lock=True)
            except Exception:
                self.close()
                raise
        self.batches += 1
        return head

    def after(self, head: Head) -> None:
        """The after-batch work (a due checkpoint), once the batch's callers are answered."""
        for callback in self._after_batch:
            with contextlib.suppress(Exception):  # a checkpoint failure must not stop appends
                callback(head)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self._tip = None, None


def _rows(batch: list[_Waiting]) -> list[bytes]:
    return [row for item in batch for row in item.rows]
