"""The audit log's writer: group commit, sequencing, the Merkle head, checkpoints.

Reads of personal data call `append` and wait: their events join the next batch, and the data
leaves the service only once that batch is committed (fail closed: an error raises
`AuditUnavailable` and the caller returns nothing). One committer thread per process gathers
whatever requests are waiting into one transaction, so many requests share one commit.

Writes call `stage` inside their own transaction: their events are rows of `audit.pending`,
committed or rolled back with the write, and the next batch gives them their place in the tree.

Each batch locks the one-row `audit.head` (size and frontier), so batches of every process of
the platform append in a single order, with no gap: the tree position (`seq`) is given at
commit, not at request time.

The leaf of event number `seq` is SHA-256(0x00 || seq as 8 bytes big-endian || body): binding
the position into the leaf makes two events swapped in place detectable one by one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from rempart.audit import events as ev
from rempart.audit.merkle import Frontier

NODE_LEVEL = 8  # subtrees of 256 leaves and more are stored for proofs
MAX_BATCH = 4096
PENDING_POLL_SECONDS = 0.25


class AuditUnavailable(RuntimeError):
    """The access could not be recorded, so it does not happen: nothing is returned."""


def leaf_input(seq: int, body: bytes) -> bytes:
    """The bytes a leaf hashes: the event's position, then its canonical encoding."""
    return struct.pack(">Q", seq) + body


def leaf_hash(seq: int, body: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + struct.pack(">Q", seq) + body).digest()


@dataclass(slots=True)
class _Waiting:
    at: dt.datetime
    body: bytes
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class Head:
    size: int
    root: bytes


def append_batch(conn: psycopg.Connection[Any], records: Sequence[tuple[dt.datetime, bytes]]) -> Head:
    """Sequence staged events, then `records`, in one transaction on `conn` (autocommit off).

    Used by the committer thread, and alone (one event per call) as the naive baseline."""
    with conn.transaction():
        size, frontier_bytes = conn.execute("SELECT size, frontier FROM audit.head FOR UPDATE").fetchone()  # type: ignore[misc]
        frontier = Frontier.from_bytes(bytes(frontier_bytes))
        assert frontier.size == size, "audit head is inconsistent"
        staged = conn.execute("DELETE FROM audit.pending RETURNING id, at, body").fetchall()
        staged.sort()
        all_records = [(at, bytes(body)) for _, at, body in staged]
        all_records.extend(records)
        if not all_records:
            return Head(size, frontier.root())
        nodes: list[tuple[int, int, bytes]] = []
        with conn.cursor().copy("COPY audit.events (seq, at, body, leaf) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "timestamptz", "bytea", "bytea"])
            for at, body in all_records:
                seq = frontier.size
                leaf = leaf_hash(seq, body)
                for level, index, digest in frontier.append(leaf):
                    if level >= NODE_LEVEL:
                        nodes.append((level, index, digest))
                copy.write_row((seq, at, body, leaf))
        if nodes:
            conn.cursor().executemany("INSERT INTO audit.nodes (level, index, hash) VALUES (%s, %s, %s)", nodes)
        conn.execute("UPDATE audit.head SET size = %s, frontier = %s", (frontier.size, frontier.to_bytes()))
        return Head(frontier.size, frontier.root())


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
        waiting = [_Waiting(event.at, ev.encode(event)) for event in events]
        if not waiting:
            return
        with self._cond:
            if self._stopping:
                raise AuditUnavailable("the audit log is closed")
            self._ensure_thread()
            self._queue.extend(waiting)
            self._cond.notify()
        deadline = time.monotonic() + timeout
        for item in waiting:
            if not item.done.wait(max(0.0, deadline - time.monotonic())):
                raise AuditUnavailable("the audit log did not confirm the record in time")
            if item.error is not None:
                raise AuditUnavailable("the audit log refused the record") from item.error

    # -- writes: same transaction as the write -----------------------------------------------

    @staticmethod
    def stage(execute: Callable[[str, dict[str, Any]], object], events: Iterable[ev.AuditEvent]) -> None:
        """Insert events into `audit.pending` through the write's own transaction (`execute`
        runs one statement with named parameters on it)."""
        for event in events:
            execute(
                "INSERT INTO audit.pending (at, body) VALUES (%(at)s, %(body)s)",
                {"at": event.at, "body": ev.encode(event)},
            )

    def sync(self) -> Head:
        """Sequence everything staged so far (and wait for it); returns the new head."""
        with self._connect() as conn:
            return append_batch(conn, [])

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

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="audit-committer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while True:
            with self._cond:
                if not self._queue and not self._stopping:
                    self._cond.wait(PENDING_POLL_SECONDS)
                if self._stopping and not self._queue:
                    break
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                head = append_batch(conn, [(item.at, item.body) for item in batch])
                self.batches += 1
            except BaseException as exc:
                for item in batch:
                    item.error = exc
                if conn is not None:
                    conn.close()
                conn = None
                head = None
            for item in batch:
                item.done.set()
            if head is not None:
                for callback in self._after_batch:
                    with contextlib.suppress(Exception):  # a checkpoint failure must not stop appends
                        callback(head)
        if conn is not None:
            conn.close()
