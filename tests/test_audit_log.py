"""The audit log: group-committed appends, one order, signed checkpoints, proofs checked by the
standalone verifier, and `verify` finding and locating every kind of tampering through SQL.

ASVS 5.0 V16 (security logging): V16.2 every access logged with who, what, when, where;
V16.4 log integrity (append-only, tamper-evident, signed checkpoints, independent verification)."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from rempart.audit import events as ev
from rempart.audit import service as audit
from rempart.audit import verifier
from rempart.audit.log import AuditLog, AuditUnavailable, leaf_hash
from rempart.audit.verify import verify
from rempart.db.server import libpq_url
from rempart.platform import Platform

pytestmark = pytest.mark.integration


def context(account: uuid.UUID | None = None) -> audit.RequestContext:
    actor = ev.Actor(account_id=account or uuid.uuid4(), role="professional", establishment_id=uuid.uuid4())
    return audit.RequestContext(actor, ip="192.0.2.17", request_id=uuid.uuid4().hex)


def read_events(platform: Platform, count: int, account: uuid.UUID | None = None) -> list[uuid.UUID]:
    subjects = [uuid.uuid4() for _ in range(count)]
    ctx = context(account)
    platform.audit.disclosed(
        platform.audit.event(
            ctx, "beneficiary.read", purpose="tiers-payant", subject=(ev.BENEFICIARY, subject), fields=("coverage",)
        )
        for subject in subjects
    )
    return subjects


def key(platform: Platform) -> str:
    with platform.session() as session:
        return audit.verifier_key(session, platform.keystore, platform.settings.audit_log_origin)


@pytest.fixture
def raw(platform: Platform) -> Iterator[psycopg.Connection]:
    with psycopg.connect(libpq_url(platform.url), autocommit=True) as conn:
        yield conn


def check(platform: Platform, raw: psycopg.Connection, *, parallel: bool = True) -> verify:  # type: ignore[valid-type]
    """`verify` as the CLI runs it: the columns' copies checked on a second connection
    (`parallel`), or on the same one afterwards."""
    connect = (lambda: psycopg.connect(libpq_url(platform.url))) if parallel else None
    return verify(raw, key(platform), connect=connect)


def test_v16_appends_sign_and_prove(platform: Platform, raw: psycopg.Connection) -> None:
    read_events(platform, 5)
    first = platform.checkpoint()
    read_events(platform, 300)  # past one stored subtree of 256 leaves
    second = platform.checkpoint()
    one = verifier.open_checkpoint(first, key(platform))
    two = verifier.open_checkpoint(second, key(platform))
    assert (one.size, two.size) == (5, 305)
    assert one.origin == platform.settings.audit_log_origin

    report = check(platform, raw)
    assert report.ok and report.events == 305 and report.checkpoints == 2

    with platform.session() as session:
        for seq in (0, 4, 255, 256, 304):
            proof = audit.prove_inclusion(session, seq=seq, size=two.size)
            assert proof.body is not None and proof.logged_at_us is not None
            recomputed = verifier.event_leaf_hash(seq, proof.logged_at_us, proof.body)
            assert proof.leaf_hash == leaf_hash(seq, proof.logged_at_us, proof.body) == recomputed
            assert verifier.verify_inclusion(proof.leaf_hash, seq, two.size, proof.proof, two.root)
            bent = bytearray(proof.proof[0])
            bent[0] ^= 1
            assert not verifier.verify_inclusion(proof.leaf_hash, seq, two.size, [bytes(bent), *proof.proof[1:]],
                                                 two.root)  # fmt: skip
        consistency = audit.prove_consistency(session, size1=one.size, size2=two.size)
    assert verifier.verify_consistency(one.size, two.size, one.root, two.root, consistency)
    assert not verifier.verify_consistency(one.size, two.size, two.root, one.root, consistency)

    # The event bytes hold no address in clear, only its sealed form and a keyed prefix hash.
    body = raw.execute("SELECT body FROM audit.events WHERE seq = 0").fetchone()[0]  # type: ignore[index]
    document = ev.decode(bytes(body))
    assert "192.0.2" not in bytes(body).decode() and document["network"] and document["ip"]
    # A security officer's tooling opens it, and that opening is in the log too.
    with platform.session() as session:
        officer = platform.audit.for_platform("security", operator="officer-1")
        assert audit.open_address(session, platform.keystore, seq=0, audit=officer) == "192.0.2.17"
    opened = raw.execute("SELECT body FROM audit.events ORDER BY seq DESC LIMIT 1").fetchone()[0]  # type: ignore[index]
    assert ev.decode(bytes(opened))["action"] == "audit.address-opened"


def test_v16_the_log_refuses_updates_and_deletes(platform: Platform, raw: psycopg.Connection) -> None:
    read_events(platform, 2)
    month = dt.date.today().strftime("%Y_%m")
    statements = ("UPDATE audit.events SET at = now()", "DELETE FROM audit.events", "TRUNCATE audit.events",
                  "TRUNCATE audit.events_default", f"TRUNCATE audit.events_{month}")  # fmt: skip
    for statement in statements:
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            raw.execute(statement)


def tamper(raw: psycopg.Connection, statement: str, *params: object) -> None:
    """An attacker with the owner's rights: the append-only trigger goes first."""
    with raw.transaction():
        raw.execute("ALTER TABLE audit.events DISABLE TRIGGER USER")
        raw.execute(statement, params)  # type: ignore[arg-type]
        raw.execute("ALTER TABLE audit.events ENABLE TRIGGER USER")


@pytest.mark.parametrize(
    ("attack", "kind", "seq"),
    [
        ("UPDATE audit.events SET body = convert_to(replace(convert_from(body, 'UTF8'), 'allowed', 'denied'), "
         "'UTF8') WHERE seq = 7", "modified", 7),
        ("UPDATE audit.events SET at = at - interval '1 day' WHERE seq = 9", "modified", 9),
        ("UPDATE audit.events SET subject_id = gen_random_uuid() WHERE seq = 10", "modified", 10),
        ("UPDATE audit.events SET account_id = NULL WHERE seq = 12", "modified", 12),
        ("DELETE FROM audit.events WHERE seq = 11", "deleted", 11),
        ("INSERT INTO audit.events (seq, logged_at, at, body, leaf, account_id, subject_id) SELECT seq, logged_at, "
         "at + interval '1 second', body, leaf, account_id, subject_id "
         "FROM audit.events WHERE seq = 13", "inserted", 13),
        ("UPDATE audit.events e SET body = o.body, leaf = o.leaf FROM audit.events o "
         "WHERE (e.seq, o.seq) IN ((3, 14), (14, 3))", "swapped", 3),
        ("DELETE FROM audit.events WHERE seq >= 18", "truncated", 18),
    ],
    ids=["update", "update-time", "update-subject-column", "update-account-column", "delete", "insert", "swap",
         "truncate"],
)  # fmt: skip
@pytest.mark.parametrize("events", [20, 700], ids=["unfinished-block", "whole-blocks"])
def test_v16_verify_detects_and_locates_tampering(
    platform: Platform, raw: psycopg.Connection, attack: str, kind: str, seq: int, events: int
) -> None:
    read_events(platform, events)
    platform.checkpoint()
    assert check(platform, raw).ok
    tamper(raw, attack)
    report = check(platform, raw)
    assert not report.ok
    assert report.first is not None and report.first.seq == seq, report.findings
    assert kind in {f.kind for f in report.findings if f.seq == seq}, report.findings


def test_v16_a_column_changed_is_found_with_or_without_a_second_connection(
    platform: Platform, raw: psycopg.Connection
) -> None:
    read_events(platform, 12)
    tamper(raw, "UPDATE audit.events SET network = 'ff' WHERE seq IN (4, 9)")
    # The columns are compared by one LIKE pattern: wildcards written into them match nothing.
    tamper(raw, "UPDATE audit.events SET network = '%%' WHERE seq = 6")
    tamper(raw, "UPDATE audit.events SET network = overlay(network PLACING '_' FROM 3 FOR 1) WHERE seq = 7")
    tamper(raw, "UPDATE audit.events SET network = overlay(network PLACING '\\' FROM 3 FOR 1) WHERE seq = 8")
    # ...nor does a value made to run on into the keys that follow it in the bytes.
    tamper(raw, """UPDATE audit.events SET network = network || '","passkey":null,"purpose":"tiers-payant'"""
                " WHERE seq = 10")  # fmt: skip
    for parallel in (True, False):
        report = check(platform, raw, parallel=parallel)
        assert [(f.kind, f.seq) for f in report.findings] == [("modified", s) for s in (4, 6, 7, 8, 9, 10)]


@pytest.mark.parametrize("forged", [4611686018427387904, -5])
def test_v16_a_position_beyond_the_log_is_reported_not_walked_to(
    platform: Platform, raw: psycopg.Connection, forged: int
) -> None:
    read_events(platform, 20)
    platform.checkpoint()
    tamper(raw, "UPDATE audit.events SET seq = %s WHERE seq = 11", forged)
    report = check(platform, raw)
    assert report.seconds < 30
    assert report.first is not None and (report.first.kind, report.first.seq) == ("deleted", 11), report.findings
    assert any(f.kind == "inserted" and "beyond the log" in f.message for f in report.findings)


def test_v16_a_batch_racing_at_the_same_positions_is_told_the_head_moved(
    platform: Platform, raw: psycopg.Connection
) -> None:
    """Two optimistic batches from the same head with a row at the same (time, position): the
    second meets the first's row (a duplicate key, or a deadlock with a batch holding the
    head's lock) and is told to retry under the lock, not failed."""
    from rempart.audit.log import HeadMoved, Record, append_batch, columns

    event = platform.audit.event(context(), "beneficiary.read", purpose="tiers-payant")
    rows = [columns(Record.of(event))] * 3  # one time for all: the positions collide
    with psycopg.connect(libpq_url(platform.url)) as conn:
        _, tip = append_batch(conn, rows[:1], lock=True)
        append_batch(conn, rows, tip=tip, drain=False)
        with pytest.raises(HeadMoved):
            append_batch(conn, rows, tip=tip, drain=False)
        append_batch(conn, rows, lock=True)
    assert check(platform, raw).ok


@pytest.mark.parametrize(
    ("attack", "kind", "seq"),
    [
        ("DELETE FROM audit.events WHERE seq = 400", "deleted", 400),
        ("UPDATE audit.events SET body = convert_to(replace(convert_from(body, 'UTF8'), 'allowed', 'denied'), "
         "'UTF8') WHERE seq = 600", "modified", 600),
        ("UPDATE audit.events e SET body = o.body, leaf = o.leaf FROM audit.events o "
         "WHERE (e.seq, o.seq) IN ((300, 650), (650, 300))", "swapped", 300),
        ("UPDATE audit.events SET subject_id = gen_random_uuid() WHERE seq = 511", "modified", 511),
    ],
    ids=["delete", "update", "swap", "update-column"],
)  # fmt: skip
def test_v16_the_quick_walk_vouches_only_for_an_intact_log(
    platform: Platform, raw: psycopg.Connection, attack: str, kind: str, seq: int
) -> None:
    """A clean log is read once, a block of 256 at a time, with no bookkeeping for locating;
    anything out of place sends verify to the walk that says what and where."""
    from rempart.audit.verify import Report, _trusted_checkpoints, _walk_clean

    read_events(platform, 700)
    platform.checkpoint()
    read_events(platform, 5)  # and a tail no checkpoint signs yet

    def quick() -> int | None:
        trusted = _trusted_checkpoints(raw, key(platform), Report(), ())
        nodes = {
            (int(level), int(index)): bytes(node)
            for level, index, node in raw.execute("SELECT level, index, hash FROM audit.nodes")
        }
        frontier = _walk_clean(raw, trusted, nodes)
        return None if frontier is None else frontier.size

    assert quick() == 705 and check(platform, raw).ok
    tamper(raw, attack)
    report = check(platform, raw)
    assert report.first is not None and report.first.seq == seq and report.first.kind == kind, report.findings
    if kind != "modified" or "subject_id" not in attack:
        assert quick() is None  # (a column's copy is checked beside the walk, not by it)


def test_v16_forged_hints_still_point_at_the_changed_range(platform: Platform, raw: psycopg.Connection) -> None:
    """A careful attacker rewrites the event and its stored leaf: the signed roots still catch it,
    and the stored subtree hashes that add up to them narrow it to one block of 256."""
    read_events(platform, 600)
    platform.checkpoint()
    body, logged = raw.execute(
        "SELECT body, (extract(epoch FROM logged_at) * 1000000)::int8 FROM audit.events WHERE seq = 300"
    ).fetchone()  # type: ignore[misc]
    forged = bytes(body).replace(b'"allowed"', b'"denied"')
    tamper(raw, "UPDATE audit.events SET body = %s, leaf = %s WHERE seq = 300", forged, leaf_hash(300, logged, forged))
    report = check(platform, raw)
    assert report.first is not None and report.first.kind == "checkpoint"
    assert report.first.seq is not None and report.first.until is not None
    assert report.first.seq <= 300 < report.first.until and report.first.until - report.first.seq <= 256


def test_v16_a_forged_checkpoint_is_reported(platform: Platform, raw: psycopg.Connection) -> None:
    read_events(platform, 3)
    note = platform.checkpoint()
    with raw.transaction():
        raw.execute("ALTER TABLE audit.checkpoints DISABLE TRIGGER USER")
        raw.execute("UPDATE audit.checkpoints SET note = %s", (note.replace("\n3\n", "\n2\n"),))
        raw.execute("ALTER TABLE audit.checkpoints ENABLE TRIGGER USER")
    report = check(platform, raw)
    assert [f.kind for f in report.findings] == ["signature"]


def test_v16_concurrent_appends_keep_one_order(platform: Platform, raw: psycopg.Connection) -> None:
    """33 threads, half of them through a second log (as another process would), append at once:
    one gapless order, every writer's events in the order it wrote them, fewer commits than
    events, and no deadlock when both store the same subtree hashes or drain staged writes."""
    other_process = AuditLog(lambda: psycopg.connect(libpq_url(platform.url)))
    accounts = [uuid.uuid4() for _ in range(33)]
    written: dict[uuid.UUID, list[uuid.UUID]] = {}

    def writer(index: int) -> None:
        own: list[uuid.UUID] = []
        for _ in range(20):
            event = platform.audit.event(context(accounts[index]), "beneficiary.read", purpose="tiers-payant",
                                         subject=(ev.BENEFICIARY, uuid.uuid4()))  # fmt: skip
            (other_process if index % 2 else platform.audit.log).append([event])
            own.append(event.event_id)
        written[accounts[index]] = own

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(33)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other_process.close()
    platform.checkpoint()
    assert check(platform, raw).ok
    rows = raw.execute("SELECT seq, body FROM audit.events ORDER BY seq").fetchall()
    assert [seq for seq, _ in rows] == list(range(33 * 20))
    by_account: dict[uuid.UUID, list[uuid.UUID]] = {}
    for _, body in rows:
        document = ev.decode(bytes(body))
        by_account.setdefault(uuid.UUID(document["account"]), []).append(uuid.UUID(document["id"]))
    assert by_account == written
    assert platform.audit.log.batches + other_process.batches < 33 * 20 / 2  # group commit


def test_v16_writes_are_staged_in_their_transaction(platform: Platform, raw: psycopg.Connection) -> None:
    trail = platform.audit.for_request(context())
    with platform.session() as session:
        trail.wrote(session, "iban.change", purpose="bank-details")
        session.rollback()  # the write did not happen: neither does its event
    with platform.session() as session:
        trail.wrote(session, "iban.change", purpose="bank-details")
        session.commit()
    head = platform.audit.log.sync()
    assert head.size == 1
    assert ev.decode(bytes(raw.execute("SELECT body FROM audit.events").fetchone()[0]))["action"] == "iban.change"  # type: ignore[index]


def test_v16_an_append_that_cannot_commit_raises(platform: Platform, raw: psycopg.Connection) -> None:
    raw.execute("ALTER TABLE audit.head RENAME TO head_gone")
    try:
        with pytest.raises(AuditUnavailable):
            read_events(platform, 1)
    finally:
        raw.execute("ALTER TABLE audit.head_gone RENAME TO head")
    read_events(platform, 1)  # and the committer recovers


def test_v16_a_refused_call_is_an_event_too(platform: Platform) -> None:
    """Refusals raised by the permission check of an audited service call are recorded."""
    from rempart.identity import breakglass, service
    from rempart.identity.permissions import Forbidden

    actor = service.CurrentUser(uuid.uuid4(), "professional", None, None, None, dt.datetime.now(dt.UTC),
                                dt.datetime.now(dt.UTC), b"")  # fmt: skip
    trail = platform.audit.for_request(actor.audit_context(ip="192.0.2.50", request_id="r-9"))
    with platform.session() as session, pytest.raises(Forbidden):
        breakglass.open_break_glass(session, actor=actor, beneficiary_id=uuid.uuid4(), reason="x" * 30, audit=trail)
    with platform.session() as session:
        from sqlalchemy import text

        (body,) = session.execute(text("SELECT body FROM audit.events")).scalars().all()
    document = ev.decode(bytes(body))
    assert (document["action"], document["decision"], document["account"]) == (
        "open_break_glass",
        "denied",
        str(actor.account_id),
    )
    assert "personal-data:break-glass" in document["reason"]


def test_v16_a_checkpoint_held_outside_catches_a_rewritten_tail(platform: Platform, raw: psycopg.Connection) -> None:
    """The owner deletes the last events, the checkpoints that signed them and rewinds the head:
    the database alone looks clean; the insurer's copy of a checkpoint does not agree."""
    read_events(platform, 10)
    early = platform.checkpoint()
    read_events(platform, 10)
    held = platform.checkpoint()
    frontier = bytes(raw.execute("SELECT frontier FROM audit.head").fetchone()[0])  # type: ignore[index]
    assert frontier
    with raw.transaction():
        raw.execute("ALTER TABLE audit.events DISABLE TRIGGER USER")
        raw.execute("ALTER TABLE audit.checkpoints DISABLE TRIGGER USER")
        raw.execute("DELETE FROM audit.events WHERE seq >= 10")
        raw.execute("DELETE FROM audit.checkpoints WHERE size > 10")
        raw.execute("DELETE FROM audit.nodes")
        from rempart.audit.merkle import Frontier

        rows = raw.execute("SELECT leaf FROM audit.events ORDER BY seq").fetchall()
        rewound = Frontier()
        for (leaf,) in rows:
            rewound.append(bytes(leaf))
        raw.execute("UPDATE audit.head SET size = %s, frontier = %s", (rewound.size, rewound.to_bytes()))
        raw.execute("ALTER TABLE audit.events ENABLE TRIGGER USER")
        raw.execute("ALTER TABLE audit.checkpoints ENABLE TRIGGER USER")
    assert verify(raw, key(platform)).ok  # what the database says about itself
    report = verify(raw, key(platform), held=[early, held])
    assert not report.ok and report.first is not None
    assert (report.first.kind, report.first.seq) == ("truncated", 10)


@pytest.mark.parametrize(
    "attack",
    ["UPDATE audit.nodes SET hash = sha256(hash) WHERE level = 8 AND index = 1",
     # flip every bit of one byte (setting it to 0xff would change nothing one time in 256)
     "UPDATE audit.head SET frontier = set_byte(frontier, 9, get_byte(frontier, 9) # 255)"],
    ids=["stored-subtree", "head-frontier"],
)  # fmt: skip
def test_v16_verify_checks_the_hints_proofs_and_appends_rely_on(
    platform: Platform, raw: psycopg.Connection, attack: str
) -> None:
    read_events(platform, 600)
    platform.checkpoint()
    assert check(platform, raw).ok
    raw.execute(attack)  # these tables carry no trigger: they are checked, not trusted
    report = check(platform, raw)
    assert [f.kind for f in report.findings] == ["hint"], report.findings


def test_v16_an_earlier_checkpoint_bounds_a_change_the_hints_hide(platform: Platform, raw: psycopg.Connection) -> None:
    read_events(platform, 280)
    platform.checkpoint()
    read_events(platform, 20)
    platform.checkpoint()
    body, logged = raw.execute(
        "SELECT body, (extract(epoch FROM logged_at) * 1000000)::int8 FROM audit.events WHERE seq = 290"
    ).fetchone()  # type: ignore[misc]
    forged = bytes(body).replace(b'"allowed"', b'"denied"')
    tamper(raw, "UPDATE audit.events SET body = %s, leaf = %s WHERE seq = 290", forged, leaf_hash(290, logged, forged))
    report = check(platform, raw)
    assert report.first is not None and report.first.kind == "checkpoint"
    assert (report.first.seq, report.first.until) == (280, 300)


def test_v16_the_head_moves_only_from_the_frontier_a_process_knows(platform: Platform) -> None:
    """A stale copy of the head at the right size (after a restore, say) cannot extend the tree,
    and sequencing times never go back even when a clock does."""
    from rempart.audit.log import HeadMoved, Record, Tip, append_batch, columns
    from rempart.audit.merkle import Frontier

    read_events(platform, 3)
    event = platform.audit.event(context(), "beneficiary.read", purpose="tiers-payant")
    with psycopg.connect(libpq_url(platform.url)) as conn:
        stale = Tip(Frontier(3, [b"\x01" * 32, b"\x02" * 32]), 0)
        with pytest.raises(HeadMoved):
            append_batch(conn, [columns(Record.of(event))], tip=stale, drain=False)
        future = 4_000_000_000_000_000  # microseconds: year 2096
        conn.execute("UPDATE audit.head SET logged_us = %s", (future,))
        conn.commit()
        _, tip = append_batch(conn, [columns(Record.of(event))], lock=True)
        assert tip.logged_us == future and tip.frontier.size == 4
