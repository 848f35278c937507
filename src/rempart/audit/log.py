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
from typing import Any, NamedTuple

import psycopg

from rempart.audit import events as ev
from rempart.audit.merkle import Frontier
from rempart.db import copy_binary

NODE_LEVEL = 8  # subtrees of 256 leaves and more are stored for proofs
MAX_BATCH = 4096
PENDING_POLL_SECONDS = 0.25


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


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(slots=True)
class _Waiting:
    """One caller's events, waiting for a batch. `done` is a lock held until the batch is
    decided: the cheapest way to park a thread (one futex, no condition variable)."""

    records: list[Record]
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
    records: Sequence[Record],
    *,
    tip: Tip | None = None,
    drain: bool = True,
    lock: bool = False,
) -> tuple[Head, Tip]:
    """Sequence staged events (when `drain`), then `records`, in one transaction on `conn`.

    The head's row is always the first lock a batch takes, so batches of several processes
    cannot deadlock (on the staged rows they drain, or on the subtree hashes they store).
    * Optimistic (`tip` given, no drain): the new head is computed here, then `audit.advance`
      moves it only from the frontier this process last wrote, which takes the row lock; if
      another process moved it meanwhile, `HeadMoved` is raised and nothing was written:
      retry with `lock=True`.
    * Locked (`lock=True`, no `tip`, or a drain): the head is read FOR UPDATE first.
    Sequencing times never go back: a batch's is the later of now and the head's.
    A committer alone (the usual case) pays two round trips besides the rows. Used alone with
    a batch of one, this is the naive baseline."""
    try:
        if lock or drain or tip is None:
            frontier_bytes, head_logged = conn.execute(
                "SELECT frontier, logged_us FROM audit.head FOR UPDATE"
            ).fetchone()  # type: ignore[misc]
            tip = Tip(Frontier.from_bytes(bytes(frontier_bytes)), int(head_logged))
        expected = tip.frontier.to_bytes()
        frontier = Frontier(tip.frontier.size, tip.frontier.hashes)  # a failed batch must not move the caller's copy
        start = frontier.size
        all_records: list[Record] = []
        if drain:
            staged = conn.execute(f"DELETE FROM audit.pending RETURNING id, {COLUMNS}").fetchall()
            staged.sort(key=lambda row: row[0])
            all_records.extend(Record(at, bytes(body), *rest) for _, at, body, *rest in staged)
        all_records.extend(records)
        if not all_records:
            conn.rollback()
            return Head(start, frontier.root()), tip
        logged_us = max(micros(dt.datetime.now(dt.UTC)), tip.logged_us)
        logged = copy_binary.timestamptz_us(logged_us)
        rows: list[bytes] = [copy_binary.HEADER]
        nodes: list[tuple[int, int, bytes]] = []
        for record in all_records:
            seq = frontier.size
            leaf = leaf_hash(seq, logged_us, record.body)
            nodes.extend(node for node in frontier.append(leaf) if node[0] >= NODE_LEVEL)
            rows.append(_event_row(seq, logged, leaf, record))
        rows.append(copy_binary.TRAILER)
        conn.execute("SELECT audit.advance(%s, %s, %s, %s)", (expected, frontier.size, frontier.to_bytes(), logged_us))
        with conn.cursor().copy(COPY_EVENTS) as copy:
            copy.write(b"".join(rows))
        # The subtree hashes and the commit go in one round trip.
        with conn.pipeline():
            if nodes:
                conn.cursor().executemany("INSERT INTO audit.nodes (level, index, hash) VALUES (%s, %s, %s)", nodes)
            conn.commit()
    except psycopg.errors.SerializationFailure:
        conn.rollback()
        raise HeadMoved from None
    except BaseException:
        if not conn.closed:
            conn.rollback()
        raise
    return Head(frontier.size, frontier.root()), Tip(frontier, logged_us)


COPY_EVENTS = f"COPY audit.events (seq, logged_at, leaf, {COLUMNS}) FROM STDIN (FORMAT BINARY)"
_EVENT_FIELDS = copy_binary.count(9)


def _event_row(seq: int, logged: bytes, leaf: bytes, record: Record) -> bytes:
    """One row of COPY_EVENTS in PostgreSQL's binary COPY format."""
    return b"".join((
        _EVENT_FIELDS, copy_binary.int8(seq), logged, copy_binary.bytea(leaf),
        copy_binary.timestamptz_us(micros(record.at)), copy_binary.bytea(record.body),
        copy_binary.uuid_or_null(record.account_id), copy_binary.uuid_or_null(record.api_client_id),
        copy_binary.text(record.network), copy_binary.uuid_or_null(record.subject_id),
    ))  # fmt: skip


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

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], *, max_batch: int = MAX_BATCH) -> None:
        self._connect = connect
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
        records = [Record.of(event) for event in events]
        if not records:
            return
        waiting = _Waiting(records)
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
        """Start the committer now (a server does, so staged events are sequenced promptly)."""
        with self._cond:
            self._ensure_thread()

    def on_batch(self, callback: Callable[[Head], None]) -> None:
        """Run `callback(head)` in the committer thread after each committed batch."""
        self._after_batch.append(callback)

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- the committer -------------------------------------------------------------------------

    def _retry_without_staged(
        self, conn: psycopg.Connection[Any] | None, batch: list[_Waiting], first: Exception
    ) -> tuple[Head | None, Tip | None, psycopg.Connection[Any] | None]:
        if conn is not None:
            conn.close()
        try:
            conn = self._connect()
            head, tip = append_batch(conn, _records(batch), drain=False, lock=True)
            self.batches += 1
            return head, tip, conn
        except Exception as exc:
            for item in batch:
                item.error = exc
            if conn is not None:
                conn.close()
            return None, None, None

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="audit-committer", daemon=True)
            self._thread.start()

    def _take_batch(self) -> list[_Waiting]:
        """Callers in arrival order, up to `max_batch` events (a caller's events stay together)."""
        taken, count = 0, 0
        while taken < len(self._queue) and (count == 0 or count + len(self._queue[taken].records) <= self._max_batch):
            count += len(self._queue[taken].records)
            taken += 1
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        return batch

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        tip: Tip | None = None  # the head as this process last wrote it
        drained = 0.0
        while True:
            with self._cond:
                if not self._queue and not self._stopping:
                    self._cond.wait(PENDING_POLL_SECONDS)
                if self._stopping and not self._queue:
                    break
                batch = self._take_batch()
            # Staged writes are picked up at least every PENDING_POLL_SECONDS, not every batch.
            drain = time.monotonic() - drained >= PENDING_POLL_SECONDS
            head: Head | None = None
            try:
                if conn is None or conn.closed:
                    conn, tip = self._connect(), None
                try:
                    head, tip = append_batch(conn, _records(batch), tip=tip, drain=drain)
                except HeadMoved:  # another process appended: take the head's lock and go again
                    head, tip = append_batch(conn, _records(batch), drain=drain, lock=True)
                if drain:
                    drained = time.monotonic()
                self.batches += 1
            except Exception as exc:
                # Retried only when the server refused a statement (a staged row the log cannot
                # take must not stop the reads). A lost connection may have lost the reply to a
                # COMMIT that happened: retrying could record the batch twice, so it fails.
                refused = isinstance(exc, psycopg.DatabaseError) and not isinstance(exc, psycopg.OperationalError)
                if drain and batch and refused:
                    drained = time.monotonic()
                    head, tip, conn = self._retry_without_staged(conn, batch, exc)
                else:
                    for item in batch:
                        item.error = exc
                    if conn is not None:
                        conn.close()
                    conn, tip, head = None, None, None
            for item in batch:
                item.done.release()
            if head is not None:
                for callback in self._after_batch:
                    with contextlib.suppress(Exception):  # a checkpoint failure must not stop appends
                        callback(head)
        if conn is not None:
            conn.close()


def _records(batch: list[_Waiting]) -> list[Record]:
    return [record for item in batch for record in item.records]
