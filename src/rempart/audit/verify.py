"""`rempart audit verify`: recompute the Merkle tree from the stored events, check it against
every kept checkpoint, and say where the log was changed.

What is trusted: only the checkpoints' signatures (the signing key is in the key provider, not
in the database, and insurers keep copies). Everything else in the database is evidence to
check: the events' bytes, their positions, their time column, the stored leaf hashes and
subtree hashes (hints).

Findings, in the order of the log:
* a position missing (`deleted`) or present twice (`inserted`);
* an event whose bytes no longer hash to the leaf stored with it (`modified`), or whose
  bytes belong at another position (`swapped`): the leaf binds the position;
* an event whose time column disagrees with its bytes (`modified`);
* a checkpoint whose root the recomputed tree does not reproduce (`checkpoint`): if no
  finding above explains it (the hints were forged too), the stored subtree hashes that still
  add up to the signed root narrow it down to the smallest range they can;
* fewer events than a checkpoint commits to (`truncated`), a checkpoint with a bad signature.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg.sql

from rempart.audit import verifier
from rempart.audit.log import NODE_LEVEL, leaf_hash
from rempart.audit.merkle import Frontier
from rempart.audit.verifier import node_hash

MAX_PAIRING = 1_000
BLOCK = 1 << NODE_LEVEL  # the fast walk hashes the log a stored subtree at a time
AT_FORMAT = """to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


def _as_found(key: str, column: str, text: str) -> str:
    """SQL: how the column's value (`text`, already escaped for LIKE) reads in the event's
    bytes under that key."""
    return f"""CASE WHEN {column} IS NULL THEN '"{key}":null' ELSE '"{key}":"' || {text} || '"' END"""


# The database's copies of values held in the bytes (time, account, client, network, subject)
# are compared inside PostgreSQL, on a second connection in the same snapshot when the caller
# can open one, while this process hashes: two cores, two workers. One LIKE pattern finds the
# five in one pass: the canonical encoding sorts its keys, so they come in this order. Ids and
# times cannot hold LIKE's wildcards; the network column is text, JSON-encoded then escaped so
# that nothing written into it (a `%`, a quote) matches but its own value; the underscore in a
# key is escaped too.
COPIES_MATCH = "body LIKE convert_to('%' || {} || '%', 'UTF8')".format(
    " || '%' || ".join(
        [
            _as_found("account", "account_id", "account_id::text"),
            _as_found("api\\_client", "api_client_id", "api_client_id::text"),
            f"""'"at":"' || {AT_FORMAT} || '"'""",
            # The network column as JSON writes it, anchored on the comma after it: a value
            # made to run on into the following keys does not match.
            "'\"network\":' || replace(replace(replace(coalesce(to_json(network)::text, 'null'),"
            " '\\', '\\\\'), '%', '\\%'), '_', '\\_') || ','",
            _as_found("subject", "subject_id", "subject_id::text"),
        ]
    )
)


@dataclass(frozen=True)
class Finding:
    kind: str  # deleted, inserted, modified, swapped, order, checkpoint, truncated, signature, hint
    seq: int | None
    message: str
    until: int | None = None  # a range [seq, until) when the change cannot be pinned to one event


@dataclass
class Report:
    events: int = 0
    checkpoints: int = 0
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first(self) -> Finding | None:
        located = [f for f in self.findings if f.seq is not None]
        return min(located, key=lambda f: f.seq or 0) if located else (self.findings[0] if self.findings else None)


def verify(
    conn: psycopg.Connection[Any],
    verifier_key: str,
    *,
    held: Sequence[str] = (),
    connect: Callable[[], psycopg.Connection[Any]] | None = None,
) -> Report:
    """Check the stored log against every checkpoint it keeps and the `held` ones (signed notes
    kept outside the database, by an insurer: the only ones an owner of the database cannot
    have removed along with the events they signed). With `connect`, the columns' copies are
    checked on a second connection, in parallel."""
    started = time.perf_counter()
    report = Report()
    # One snapshot for everything read: appends going on meanwhile do not show half-way.
    saved = conn.isolation_level, conn.read_only
    conn.isolation_level, conn.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True
    try:
        with conn.transaction():
            _walk(conn, verifier_key, report, held, connect)
    finally:
        conn.isolation_level, conn.read_only = saved
    report.findings.sort(key=lambda f: (f.seq is None, f.seq or 0))
    report.seconds = time.perf_counter() - started
    return report


def _walk(
    conn: psycopg.Connection[Any],
    verifier_key: str,
    report: Report,
    held: Sequence[str],
    connect: Callable[[], psycopg.Connection[Any]] | None,
) -> None:
    trusted = _trusted_checkpoints(conn, verifier_key, report, held)
    copies = _CopiesCheck(conn, connect)
    report.checkpoints = len(trusted)
    stored_nodes = {
        (int(level), int(index)): bytes(node)
        for level, index, node in conn.execute("SELECT level, index, hash FROM audit.nodes")
    }
    if not report.findings:
        clean = _walk_clean(conn, trusted, dict(stored_nodes))
        if clean is not None and not copies.mismatches():
            report.events = clean.size
            _check_head(conn, report, clean)
            return
        # Something is out of place: the walk below finds it and says what and where.
    pending = list(trusted)  # (size, root), ascending
    if pending and pending[0][0] == 0 and pending.pop(0)[1] != verifier.EMPTY_ROOT:
        report.findings.append(Finding("checkpoint", None, "the checkpoint of the empty log has a wrong root"))
    bad_node: tuple[int, int] | None = None
    expected = 0
    last_logged = 0
    mismatched: dict[int, tuple[bytes, int, bytes]] = {}  # seq -> (body, logged, stored leaf)
    first_checkpoint_miss: tuple[int, bytes] | None = None
    last_checkpoint_kept = 0  # the largest signed size the events still reproduce, before any miss
    # The tree's frontier, kept inline (this loop runs once per event ever logged): `stack`
    # holds the perfect subtrees' hashes, as `Frontier` does.
    stack: list[bytes] = []
    sha256, from_bytes = hashlib.sha256, int.from_bytes
    next_checkpoint = pending[0][0] if pending else -1
    # No honest position lies beyond this: a forged one (huge, or negative read unsigned) is
    # reported, not walked up to.
    reach = conn.execute(
        "SELECT coalesce((SELECT max(size) FROM audit.head), 0) + (SELECT count(*) FROM audit.events)"
    ).fetchone()[0]  # type: ignore[index]
    reach = max(int(reach), *(size for size, _ in trusted), 0) + 1
    for row in _leaf_rows(conn):
        leaf, preimage = row[6:38], row[42:]
        seq, logged = from_bytes(preimage[1:9]), from_bytes(preimage[9:17])
        if seq >= reach:
            report.findings.append(Finding("inserted", seq, f"an event claims position #{seq}, beyond the log"))
            continue
        if seq < expected:
            report.findings.append(Finding("inserted", seq, f"event #{seq} appears twice: one was inserted"))
            continue
        if seq > expected:
            report.findings.append(
                Finding("deleted", expected, f"events #{expected}..#{seq - 1} are missing: deleted", until=seq)
            )
            gap = Frontier(expected, stack)  # keep positions aligned so later checks still mean something
            while gap.size < seq:
                gap.append(b"\x00" * 32)
            stack, expected = list(gap.hashes), seq
        digest = sha256(preimage).digest()
        if digest != leaf:
            mismatched[seq] = (preimage[LEAF_PREFIX:], logged, leaf)
        elif logged < last_logged:  # each batch's time is the later of now and the head's
            report.findings.append(Finding("order", seq, f"event #{seq} was sequenced before the one ahead of it"))
        if logged > last_logged:
            last_logged = logged
        node, index, level = digest, seq, 0
        while index & 1:  # the new leaf completes subtrees like a binary counter's carry
            node = sha256(b"\x01" + stack.pop() + node).digest()
            index >>= 1
            level += 1
            forged = level >= NODE_LEVEL and stored_nodes.pop((level, index), node) != node
            if forged and bad_node is None and not report.findings and not mismatched:
                bad_node = (level, index)  # only meaningful while the events themselves are intact
        stack.append(node)
        expected += 1
        if 0 <= next_checkpoint <= expected:
            while pending and pending[0][0] <= expected:  # sizes skipped in a gap cannot be checked
                size, root = pending.pop(0)
                if size == expected and first_checkpoint_miss is None:
                    if Frontier(expected, stack).root() != root:
                        first_checkpoint_miss = (size, root)
                    else:
                        last_checkpoint_kept = size
            next_checkpoint = pending[0][0] if pending else -1
    frontier = Frontier(expected, stack)
    for seq in copies.mismatches():
        if seq not in mismatched:
            report.findings.append(
                Finding("modified", seq, f"event #{seq}: a column no longer matches its bytes (time or an index)")
            )
    report.events = expected
    report.findings.extend(_explain_mismatches(mismatched))
    if pending:
        size, _ = pending[0]
        report.findings.append(
            Finding(
                "truncated", expected, f"the log holds {expected} events but a checkpoint signed {size}", until=size
            )
        )
    if first_checkpoint_miss is not None:
        size, root = first_checkpoint_miss
        # Only changes to what the leaves hash explain a wrong root (not a column's copy).
        structural = [f.seq for f in report.findings if f.kind in TREE_KINDS and f.seq is not None]
        explained = any(seq < size for seq in [*structural, *mismatched])
        if not explained:
            start, end = _narrow(conn, size, root)
            start = max(start, last_checkpoint_kept)  # what an earlier checkpoint still vouches for
            report.findings.append(
                Finding(
                    "checkpoint",
                    start,
                    f"the events differ from checkpoint {size}: the change lies in events #{start}..#{end - 1}",
                    until=end,
                )
            )
        else:
            report.findings.append(Finding("checkpoint", None, f"the tree does not reproduce checkpoint {size}"))
    # The hints proofs are built from, and the head the next batch will extend, must agree with
    # the events: forged ones would make honest proofs fail or the next checkpoint wrong.
    if bad_node is not None:
        level, index = bad_node
        start = index << level
        span = f"#{start}..#{start + (1 << level) - 1}"
        report.findings.append(Finding("hint", None, f"the stored subtree hash of events {span} does not match them"))
    _check_head(conn, report, frontier)


def _check_head(conn: psycopg.Connection[Any], report: Report, frontier: Frontier) -> None:
    head_row = conn.execute("SELECT size, frontier FROM audit.head").fetchone()
    if head_row is not None:
        head_size, head_frontier = int(head_row[0]), bytes(head_row[1])
        if head_size != frontier.size and not report.findings:
            message = f"the head says {head_size} events, {frontier.size} found"
            report.findings.append(Finding("truncated", frontier.size, message))
        elif head_size == frontier.size and head_frontier != frontier.to_bytes():
            report.findings.append(Finding("hint", None, "the head's frontier does not match the events"))


def _walk_clean(
    conn: psycopg.Connection[Any], trusted: Sequence[tuple[int, bytes]], stored_nodes: dict[tuple[int, int], bytes]
) -> Frontier | None:
    """The tree of the events, hashed BLOCK positions at a time with none of the bookkeeping
    that locates a change: the frontier if every check of the full walk passes, None at the
    first thing out of place (positions, leaves, sequencing times, stored subtree hashes,
    checkpoint roots, a checkpoint beyond the events). A clean log, the usual case, is read
    once, this way; the full walk runs only when there is something to say."""
    pending = list(trusted)
    if pending and pending[0][0] == 0 and pending.pop(0)[1] != verifier.EMPTY_ROOT:
        return None
    sha256 = hashlib.sha256
    stack: list[bytes] = []  # the perfect subtrees (of BLOCK leaves or more) before the block
    size = last_logged = 0

    def fold(rows: list[bytes]) -> bool:
        nonlocal size, last_logged
        count = len(rows)
        leaves = [sha256(row[42:]).digest() for row in rows]
        if b"".join(leaves) != b"".join([row[6:38] for row in rows]):
            return False
        # Each row's position and sequencing time, in one unpacking: positions follow on,
        # times never go back (within the block and from the one before).
        keys = struct.unpack(f">{2 * count}q", b"".join([row[43:59] for row in rows]))
        logged = list(keys[1::2])
        if keys[0::2] != tuple(range(size, size + count)) or logged[0] < last_logged or logged != sorted(logged):
            return False
        last_logged = logged[-1]
        while pending and pending[0][0] <= size + count:
            checkpoint_size, root = pending.pop(0)
            partial = Frontier(size, stack)
            for leaf in leaves[: checkpoint_size - size]:
                partial.append(leaf)
            if partial.root() != root:
                return False
        if count < BLOCK:  # the log's last, unfinished block: its subtrees are not stored
            tail = Frontier(size, stack)
            for leaf in leaves:
                tail.append(leaf)
            stack[:] = tail.hashes
            size += count
            return True
        level_nodes = leaves
        while len(level_nodes) > 1:
            pairs = iter(level_nodes)
            level_nodes = [sha256(b"\x01" + left + right).digest() for left, right in zip(pairs, pairs, strict=True)]
        node, index, level = level_nodes[0], size >> NODE_LEVEL, NODE_LEVEL
        if stored_nodes.pop((level, index), node) != node:
            return False
        while index & 1:  # the block completes larger subtrees, like a binary counter's carry
            node = sha256(b"\x01" + stack.pop() + node).digest()
            index >>= 1
            level += 1
            if stored_nodes.pop((level, index), node) != node:
                return False
        stack.append(node)
        size += count
        return True

    rows: list[bytes] = []
    stream = _leaf_rows(conn)
    for row in stream:
        rows.append(row)
        if len(rows) == BLOCK:
            if not fold(rows):
                for _ in stream:  # a COPY left half-read would fail the transaction the full walk needs
                    pass
                return None
            rows = []
    if (rows and not fold(rows)) or pending:  # a checkpoint left over signed more events than there are
        return None
    return Frontier(size, stack)


TREE_KINDS = frozenset({"deleted", "inserted", "swapped"})

LEAF_PREFIX = 17  # 0x00, the position and the sequencing time: what precedes the body in a leaf
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_COPY_HEADER = len(_COPY_SIGNATURE) + 8  # flags and header extension length (both zero)
_ROW_START = b"\x00\x02\x00\x00\x00\x20"  # two fields, the first 32 bytes long
_LEAF_ROWS = (
    "COPY (SELECT leaf, '\\x00'::bytea || int8send(seq)"
    " || int8send((extract(epoch FROM logged_at) * 1000000)::int8) || body"
    " FROM audit.events ORDER BY seq) TO STDOUT (FORMAT BINARY)"
)


def _leaf_rows(conn: psycopg.Connection[Any]) -> Iterator[bytes]:
    """Each event as one binary COPY row: an int16 field count (2), the int32 length (32) and
    bytes of its stored leaf, then the length and bytes of the leaf's preimage (0x00, position,
    sequencing time, body), which PostgreSQL concatenates so that this process only hashes it.
    Rows are read as they come (one message each), not through typed loaders: this runs once
    per event ever logged."""
    with conn.cursor().copy(_LEAF_ROWS) as copy:
        first = True
        for message in copy:
            row = bytes(message)
            if first:
                if not row.startswith(_COPY_SIGNATURE):
                    raise ValueError("the database did not answer in binary COPY format")
                row, first = row[_COPY_HEADER:], False
            if len(row) <= 2:  # the trailer (or a header alone)
                continue
            if row[:6] != _ROW_START or len(row) < 42 + LEAF_PREFIX:
                raise ValueError("an audit row has an unexpected shape (a column was made nullable?)")
            yield row


class _CopiesCheck:
    """The events whose time, account, client, network or subject column no longer matches
    their bytes: on a second connection sharing `conn`'s snapshot (in parallel with the walk),
    or on `conn` itself, afterwards."""

    QUERY = f"SELECT seq FROM audit.events WHERE NOT ({COPIES_MATCH}) ORDER BY seq"

    def __init__(self, conn: psycopg.Connection[Any], connect: Callable[[], psycopg.Connection[Any]] | None) -> None:
        self._conn = conn
        self._found: list[int] = []
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if connect is not None:
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()
            assert snapshot is not None
            self._thread = threading.Thread(target=self._run, args=(connect, snapshot[0]), daemon=True)
            self._thread.start()

    def _run(self, connect: Callable[[], psycopg.Connection[Any]], snapshot: str) -> None:
        try:
            with connect() as other:
                other.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                other.execute(psycopg.sql.SQL("SET TRANSACTION SNAPSHOT {}").format(psycopg.sql.Literal(snapshot)))
                # One core for this scan, the other for the walk: parallel workers would only
                # take turns with the walk's process on a two-core machine.
                other.execute("SET LOCAL max_parallel_workers_per_gather = 0")
                self._found = [int(seq) for (seq,) in other.execute(self.QUERY)]
                other.rollback()
        except BaseException as exc:
            self._error = exc

    def mismatches(self) -> list[int]:
        if self._thread is None:
            return [int(seq) for (seq,) in self._conn.execute(self.QUERY)]
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._found


def _trusted_checkpoints(
    conn: psycopg.Connection[Any], key: str, report: Report, held: Sequence[str]
) -> list[tuple[int, bytes]]:
    trusted: list[tuple[int, bytes]] = []
    stored = conn.execute("SELECT size, note FROM audit.checkpoints ORDER BY size").fetchall()
    for size, note in [*stored, *(("held", note) for note in held)]:
        try:
            checkpoint = verifier.open_checkpoint(note, key)
        except verifier.CheckpointError as exc:
            report.findings.append(Finding("signature", None, f"checkpoint {size}: {exc}"))
            continue
        trusted.append((checkpoint.size, checkpoint.root))
    return sorted(set(trusted))


def _explain_mismatches(mismatched: dict[int, tuple[bytes, int, bytes]]) -> list[Finding]:
    """Leaves bind their position: bytes found at #i that hash right at #j were moved there.
    (Only the first MAX_PAIRING mismatches are paired up; the others are reported as modified.)"""
    findings: list[Finding] = []
    candidates = dict(sorted(mismatched.items())[:MAX_PAIRING])
    for seq, (body, logged, own_leaf) in sorted(mismatched.items()):
        # Moved with its stored leaf, or alone: either way its bytes hash right at another position.
        moved_from = next(
            (
                other
                for other, (_, other_logged, other_leaf) in candidates.items()
                if seq in candidates
                and other != seq
                and any(leaf_hash(other, t, body) in (own_leaf, other_leaf) for t in (logged, other_logged))
            ),
            None,
        )
        if moved_from is not None:
            findings.append(Finding("swapped", seq, f"event #{seq} holds the event recorded at #{moved_from}"))
        else:
            findings.append(Finding("modified", seq, f"event #{seq} was modified: its bytes no longer match its leaf"))
    return findings


def _narrow(conn: psycopg.Connection[Any], size: int, root: bytes) -> tuple[int, int]:
    """Walk down from a signed root while the stored hints (subtree hashes of 256 events and
    more, leaf hashes below) still add up to it: two hints that hash to a trusted value are
    trusted too, and the half whose events no longer reproduce its hint holds the change."""

    def hint(start: int, end: int) -> bytes:
        width = end - start
        if width & (width - 1) == 0 and start % width == 0 and width >= 1 << NODE_LEVEL:
            level = width.bit_length() - 1
            found = conn.execute(
                "SELECT hash FROM audit.nodes WHERE level = %s AND index = %s", (level, start >> level)
            ).fetchone()
            if found is not None:
                return bytes(found[0])
        if width > 1 << NODE_LEVEL:
            split = 1 << ((width - 1).bit_length() - 1)
            return node_hash(hint(start, start + split), hint(start + split, end))
        leaves = conn.execute("SELECT leaf FROM audit.events WHERE seq >= %s AND seq < %s ORDER BY seq", (start, end))
        return verifier.root_from_leaf_hashes([bytes(leaf) for (leaf,) in leaves])

    def actual(start: int, end: int) -> bytes:
        rows = conn.execute(
            "SELECT seq, (extract(epoch FROM logged_at) * 1000000)::int8, body FROM audit.events"
            " WHERE seq >= %s AND seq < %s ORDER BY seq",
            (start, end),
        )
        return verifier.root_from_leaf_hashes([leaf_hash(int(s), int(t), bytes(b)) for s, t, b in rows])

    start, end, trusted = 0, size, root
    while end - start > 1:
        split = 1 << ((end - start - 1).bit_length() - 1)
        left, right = hint(start, start + split), hint(start + split, end)
        if node_hash(left, right) != trusted:
            break  # the hints below were forged as well: this range is as narrow as they allow
        if actual(start, start + split) != left:
            end, trusted = start + split, left
        else:
            start, trusted = start + split, right
    return start, end
