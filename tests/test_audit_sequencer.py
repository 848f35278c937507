"""The audit sequencer: reads of several server processes committed by one process, in one
order, group-committed, and failing closed when the sequencer or the database cannot record.

ASVS 5.0 V16.2 (every access logged) and V16.4 (log integrity) through the multi-process path
`rempart serve --workers` uses."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from rempart.audit import events as ev
from rempart.audit import service as audit
from rempart.audit.log import AuditUnavailable, Record, columns
from rempart.audit.sequencer import COMMITTED, REFUSED, Sequencer, decode_request, encode_request
from rempart.audit.verify import verify
from rempart.db.server import libpq_url
from rempart.platform import Platform, SequencerProcess, open_platform
from rempart.settings import Settings

pytestmark = pytest.mark.integration


def read_event(platform: Platform, subject: uuid.UUID) -> ev.AuditEvent:
    actor = ev.Actor(account_id=uuid.uuid4(), role="professional", establishment_id=uuid.uuid4())
    context = audit.RequestContext(actor, ip="198.51.100.7", request_id=uuid.uuid4().hex)
    return platform.audit.event(
        context, "beneficiary.read", purpose="tiers-payant", subject=(ev.BENEFICIARY, subject), fields=("coverage",)
    )


@pytest.fixture
def sequencer(platform: Platform, tmp_path: Path) -> Iterator[Sequencer]:
    """The sequencer's loop on a thread of the test (the same code `rempart serve` runs in a
    process of its own), over a real socket and the real database."""
    running = Sequencer(tmp_path / "run" / "audit.sock", platform.audit.log.batch_writer())
    thread = threading.Thread(target=running.serve, daemon=True)
    thread.start()
    assert running.wait_listening(10)
    yield running
    running.stop()
    thread.join(10)


@pytest.fixture
def worker(settings: Settings, sequencer: Sequencer) -> Iterator[Platform]:
    """A server process's platform, its reads going to the sequencer."""
    platform = open_platform(settings.model_copy(update={"audit_sequencer": sequencer.path}), run_migrations=False)
    yield platform
    platform.close()


def stored_subjects(platform: Platform) -> list[uuid.UUID]:
    with psycopg.connect(libpq_url(platform.url)) as conn:
        seqs = conn.execute("SELECT seq, subject_id FROM audit.events ORDER BY seq").fetchall()
    assert [seq for seq, _ in seqs] == list(range(len(seqs)))  # one order, no gap
    return [subject for _, subject in seqs]


def test_v16_reads_of_many_threads_commit_in_one_order_and_share_commits(
    platform: Platform, worker: Platform, sequencer: Sequencer
) -> None:
    subjects: list[list[uuid.UUID]] = [[uuid.uuid4() for _ in range(25)] for _ in range(12)]

    def reads(mine: list[uuid.UUID]) -> None:
        for subject in mine:
            worker.audit.disclosed([read_event(worker, subject)])

    threads = [threading.Thread(target=reads, args=(mine,)) for mine in subjects]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = stored_subjects(platform)
    assert sorted(map(str, stored)) == sorted(str(s) for mine in subjects for s in mine)
    for mine in subjects:  # each thread's reads keep the order they were made in
        positions = [stored.index(subject) for subject in mine]
        assert positions == sorted(positions)
    assert sequencer.events == 300 and sequencer.batches < 300  # requests shared commits
    platform.checkpoint()
    with psycopg.connect(libpq_url(platform.url)) as conn, platform.session() as session:
        key = audit.verifier_key(session, platform.keystore, platform.settings.audit_log_origin)
        assert verify(conn, key).ok


def test_v16_staged_writes_are_sequenced_by_the_sequencer(platform: Platform, worker: Platform) -> None:
    """A worker has no committer thread: the sequencer picks up what writes staged."""
    subject = uuid.uuid4()
    with worker.session() as session:
        audit.stage(session, [read_event(worker, subject)])
        session.commit()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and subject not in stored_subjects(platform):
        time.sleep(0.05)
    assert stored_subjects(platform) == [subject]


def test_v16_no_sequencer_no_data(settings: Settings, tmp_path: Path) -> None:
    """A worker whose sequencer is gone records nothing, so it returns nothing."""
    lonely = open_platform(
        settings.model_copy(update={"audit_sequencer": tmp_path / "nobody.sock"}), run_migrations=False
    )
    try:
        with pytest.raises(AuditUnavailable):
            lonely.audit.disclosed([read_event(lonely, uuid.uuid4())])
    finally:
        lonely.close()


def test_v16_a_batch_the_database_refuses_is_refused_to_every_caller(
    platform: Platform, worker: Platform, sequencer: Sequencer
) -> None:
    worker.audit.disclosed([read_event(worker, uuid.uuid4())])
    with psycopg.connect(libpq_url(platform.url), autocommit=True) as conn:
        conn.execute("ALTER TABLE audit.events RENAME TO events_gone")
        try:
            with pytest.raises(AuditUnavailable):
                worker.audit.disclosed([read_event(worker, uuid.uuid4())])
        finally:
            conn.execute("ALTER TABLE audit.events_gone RENAME TO events")
    survivor = uuid.uuid4()
    worker.audit.disclosed([read_event(worker, survivor)])  # and it records again once it can
    stored = stored_subjects(platform)
    assert len(stored) == 2 and stored[-1] == survivor


def test_a_malformed_request_is_refused_and_the_others_go_on(
    platform: Platform, worker: Platform, sequencer: Sequencer
) -> None:
    good = columns(Record.of(read_event(platform, uuid.uuid4())))
    assert decode_request(encode_request([good])[4:]) == [good]
    bad_requests = [
        encode_request([good[:-3]]),  # a row cut short
        encode_request([good + b"\x00"]),  # a row with a byte too many
        b"\x00\x00\x00\x02\x00\x00",  # no row
        b"\xff\xff\xff\xff",  # a length past the limit
    ]
    for request in bad_requests:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(5)
            conn.connect(str(sequencer.path))
            conn.sendall(request)
            assert conn.recv(1) == REFUSED
            assert conn.recv(1) == b""  # and the connection is closed
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(5)
        conn.connect(str(sequencer.path))
        conn.sendall(encode_request([good, good]))
        assert conn.recv(1) == COMMITTED
    worker.audit.disclosed([read_event(worker, uuid.uuid4())])
    assert len(stored_subjects(platform)) == 3
    assert sequencer.path.stat().st_mode & 0o077 == 0  # the platform's user only


def test_v16_the_sequencer_process_serves_workers_and_is_restarted(
    platform: Platform, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process `rempart serve --workers` starts (settings from the environment), killed
    and started again by its watchdog; meanwhile reads fail closed."""
    monkeypatch.setenv("REMPART_DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("REMPART_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("REMPART_KEYRING_PATH", str(settings.resolved_keyring_path))
    sequencer = SequencerProcess(tmp_path / "run" / "audit.sock")
    assert sequencer.start()
    worker = open_platform(settings.model_copy(update={"audit_sequencer": sequencer.path}), run_migrations=False)
    try:
        first = [uuid.uuid4() for _ in range(3)]
        worker.audit.disclosed(read_event(worker, subject) for subject in first)
        assert stored_subjects(platform) == first
        killed = sequencer.pid
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        with pytest.raises(AuditUnavailable):
            worker.audit.disclosed([read_event(worker, uuid.uuid4())])
        deadline = time.monotonic() + 60
        recorded = uuid.uuid4()
        while True:
            try:
                worker.audit.disclosed([read_event(worker, recorded)])
                break
            except AuditUnavailable:
                assert time.monotonic() < deadline, "the sequencer was not started again"
                time.sleep(0.2)
        assert sequencer.restarts == 1 and sequencer.pid != killed
        assert stored_subjects(platform) == [*first, recorded]
    finally:
        worker.close()
        sequencer.stop()
