"""The audit sequencer: one process that commits the reads of every server process.

Why a process of its own: inside one process, request threads waiting for a committer thread
spend their time winning CPython's interpreter lock back from each other (the committer must
win it after each round trip to the database), and with several server processes each
committer would fight the others for the tree's head. The sequencer owns the head: server
processes build their events' rows (`log.columns`) and send them over a Unix socket; the
sequencer commits whatever has arrived as one batch (`log.BatchWriter`: the same code as the
in-process committer, staged writes and checkpoints included), then answers each request.

Protocol, on a Unix socket only the platform's user may open:
* request: uint32 length of what follows, uint16 number of rows, then per row a uint32 length
  and the row;
* answer: one byte, once the request's batch is decided: 0 committed, 1 refused.
A connection carries one request at a time (a client thread waits for its answer), so an
answer always belongs to the last request. A client that gives up waiting closes its
connection: its events may still be committed, and the log then shows an access that did not
complete, never the reverse.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

from rempart.audit.log import MAX_BATCH, PENDING_POLL_SECONDS, AuditUnavailable, BatchWriter, Head, checked_body

COMMITTED, REFUSED = b"\x00", b"\x01"
MAX_REQUEST = 64 * 1024 * 1024  # bytes: far above any request's events, far below harm
_LENGTH = struct.Struct(">I")
_COUNT = struct.Struct(">H")
_RECEIVE = 1 << 20

_log = logging.getLogger(__name__)


def encode_request(rows: list[bytes]) -> bytes:
    if not 0 < len(rows) < 1 << 16:
        raise ValueError("a request carries 1 to 65,535 events")
    body = b"".join([_COUNT.pack(len(rows)), *(_LENGTH.pack(len(row)) + row for row in rows)])
    return _LENGTH.pack(len(body)) + body


def decode_request(body: bytes) -> list[bytes]:
    """The rows of a request, each checked (ValueError for anything malformed)."""
    if len(body) < _COUNT.size:
        raise ValueError("truncated request")
    (count,) = _COUNT.unpack_from(body, 0)
    rows, offset = [], _COUNT.size
    for _ in range(count):
        if offset + _LENGTH.size > len(body):
            raise ValueError("truncated request")
        (length,) = _LENGTH.unpack_from(body, offset)
        offset += _LENGTH.size
        row = body[offset : offset + length]
        if len(row) != length:
            raise ValueError("truncated request")
        checked_body(row)
        rows.append(row)
        offset += length
    if offset != len(body) or not rows:
        raise ValueError("request length does not add up")
    return rows


class Client:
    """A server process's side: one connection per thread, opened on first use."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()

    def append(self, rows: list[bytes], *, timeout: float) -> None:
        """Send the rows and return once the sequencer committed them (AuditUnavailable
        otherwise: the caller returns nothing)."""
        request = encode_request(rows)
        conn: socket.socket | None = getattr(self._local, "conn", None)
        try:
            if conn is None:
                conn = self._connect()
            conn.settimeout(timeout)
            conn.sendall(request)
            answer = conn.recv(1)
        except OSError as exc:  # refused, lost or timed out: the connection's state is unknown
            self._drop(conn)
            raise AuditUnavailable("the audit sequencer did not confirm the record") from exc
        if answer != COMMITTED:
            if not answer:
                self._drop(conn)
            raise AuditUnavailable("the audit sequencer refused the record")

    def _connect(self) -> socket.socket:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(str(self._path))
        except OSError:
            conn.close()
            raise
        self._local.conn = conn
        with self._lock:
            self._open.add(conn)
        return conn

    def _drop(self, conn: socket.socket | None) -> None:
        self._local.conn = None
        if conn is not None:
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def close(self) -> None:
        with self._lock:
            for conn in self._open:
                conn.close()
            self._open.clear()


@dataclass(eq=False)
class _Peer:
    conn: socket.socket
    received: bytearray = field(default_factory=bytearray)


class Sequencer:
    """The sequencer's loop: read requests, commit what arrived, answer; repeat."""

    def __init__(self, path: Path, writer: BatchWriter, *, max_batch: int = MAX_BATCH) -> None:
        self.path = path
        self._writer = writer
        self._max_batch = max_batch
        self._selector = selectors.DefaultSelector()
        self._ready: list[tuple[_Peer, list[bytes]]] = []
        self._stopping = threading.Event()
        self._listening = threading.Event()
        self.batches = 0
        self.events = 0

    def serve(self) -> None:
        """Listen on `path` and serve until `stop`."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a socket left by a sequencer that did not stop cleanly
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_mask = os.umask(0o177)  # the socket is the platform user's only, from its creation
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old_mask)
        listener.listen(512)
        listener.setblocking(False)
        self._selector.register(listener, selectors.EVENT_READ, None)
        self._listening.set()
        try:
            while not self._stopping.is_set():
                timeout = 0 if self._ready else PENDING_POLL_SECONDS
                for key, _ in self._selector.select(timeout):
                    if key.data is None:
                        self._accept(listener)
                    else:
                        self._receive(key.data)
                if self._ready or self._writer.drain_due():
                    self._commit()
        finally:
            for key in list(self._selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            self._selector.close()
            self._writer.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def wait_listening(self, timeout: float) -> bool:
        return self._listening.wait(timeout)

    def stop(self) -> None:
        self._stopping.set()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                return
            conn.setblocking(False)
            self._selector.register(conn, selectors.EVENT_READ, _Peer(conn))

    def _receive(self, peer: _Peer) -> None:
        try:
            data = peer.conn.recv(_RECEIVE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(peer)
            return
        peer.received += data
        while len(peer.received) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(peer.received, 0)
            if length > MAX_REQUEST:
                self._refuse(peer)
                return
            if len(peer.received) < _LENGTH.size + length:
                return
            body = bytes(peer.received[_LENGTH.size : _LENGTH.size + length])
            del peer.received[: _LENGTH.size + length]
            try:
                rows = decode_request(body)
            except ValueError:
                self._refuse(peer)
                return
            self._ready.append((peer, rows))

    def _commit(self) -> None:
        taken, count = 0, 0
        while taken < len(self._ready) and (count == 0 or count + len(self._ready[taken][1]) <= self._max_batch):
            count += len(self._ready[taken][1])
            taken += 1
        batch, self._ready = self._ready[:taken], self._ready[taken:]
        head: Head | None = None
        try:
            head = self._writer.commit([row for _, rows in batch for row in rows])
            answer = COMMITTED
        except Exception as exc:  # the callers return nothing; the reason is for the operators
            _log.warning("audit batch of %d events not committed: %s", count, type(exc).__name__)
            answer = REFUSED
        for peer, _ in batch:
            try:
                peer.conn.send(answer)
            except OSError:
                self._close(peer)
        self.batches, self.events = self._writer.batches, self.events + (count if head is not None else 0)
        if head is not None:
            self._writer.after(head)

    def _refuse(self, peer: _Peer) -> None:
        with contextlib.suppress(OSError):
            peer.conn.send(REFUSED)
        self._close(peer)

    def _close(self, peer: _Peer) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(peer.conn)
        peer.conn.close()
