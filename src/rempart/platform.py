"""The running platform's shared parts: settings, database, key provider, keystore.

Every door (CLI, API, tests) opens one `Platform` and passes its parts to service functions.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psycopg
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from rempart.audit import service as audit_service
from rempart.audit.log import AuditLog, Head, ensure_partitions
from rempart.audit.sequencer import Client, Sequencer
from rempart.crypto.keystore import Keystore
from rempart.crypto.local import LocalKeyringProvider
from rempart.crypto.provider import KeyProvider
from rempart.db import migrate
from rempart.db.engine import make_engine, make_sessionmaker
from rempart.db.server import check_server_version, libpq_url, resolve_database_url
from rempart.identity.tenancy import tenant_connection
from rempart.settings import Settings, get_settings

_log = logging.getLogger(__name__)


class Caller(Protocol):
    @property
    def role(self) -> str: ...

    @property
    def insurer_id(self) -> uuid.UUID | None: ...


def make_key_provider(settings: Settings) -> KeyProvider:
    if settings.key_provider == "vault":
        from rempart.crypto.vault import VaultTransitProvider

        return VaultTransitProvider(settings.vault_addr, settings.vault_token.get_secret_value(), settings.vault_mount)
    keyring = settings.resolved_keyring_path.resolve()
    pgdata = settings.pgdata_dir.resolve()
    if keyring.is_relative_to(pgdata):
        raise ValueError("the keyring must live outside the database folder")
    return LocalKeyringProvider(keyring)


@dataclass
class Platform:
    settings: Settings
    url: str
    engine: Engine
    sessions: sessionmaker[Session]
    keystore: Keystore
    audit: audit_service.Auditor
    _tenant_engines: dict[uuid.UUID, Engine] = field(default_factory=dict)
    _tenant_lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def session(self, *, autocommit: bool = False) -> Iterator[Session]:
        """A session in a transaction, or with `autocommit` one whose every statement commits as
        it runs (for use cases whose writes are each one statement: no BEGIN and COMMIT round
        trips around them). The connection is back to transactions when it returns to the pool;
        a `session.commit()` or `rollback()` inside ends the autocommit too (the session's next
        statement runs on a connection in a transaction)."""
        with self.sessions() as session:
            if autocommit:
                session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            yield session

    @contextmanager
    def data_session(self, caller: Caller) -> Iterator[Session]:
        """Where a caller's reads of registry data run: for insurer staff, a connection logged
        in as their insurer's tenant role, so row-level security confines every query to that
        insurer whatever the code asks; for everyone else, the platform's own connection."""
        if caller.role != "insurer_staff":
            with self.session() as session:
                yield session
            return
        if caller.insurer_id is None:
            raise PermissionError("insurer staff without an insurer")
        with Session(self._tenant_engine(caller.insurer_id)) as session:
            yield session

    def _tenant_engine(self, insurer_id: uuid.UUID) -> Engine:
        with self._tenant_lock:
            engine = self._tenant_engines.get(insurer_id)
            if engine is None:
                url = self.url
                engine = create_engine(
                    "postgresql+psycopg://", creator=lambda: tenant_connection(url, insurer_id=insurer_id),
                    pool_size=2, max_overflow=4, pool_pre_ping=True,
                )  # fmt: skip
                self._tenant_engines[insurer_id] = engine
            return engine

    @contextmanager
    def raw_connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A dedicated psycopg connection, for COPY-heavy work in one transaction."""
        with psycopg.connect(libpq_url(self.url)) as conn:
            yield conn

    def checkpoint(self) -> str:
        """Sequence staged events and sign the tree as it stands now."""
        self.audit.log.sync()
        with self.session() as session:
            return audit_service.make_checkpoint(session, self.keystore, self.settings.audit_log_origin)

    def close(self) -> None:
        self.audit.log.close()
        bind = self.audit.sessions.kw.get("bind")
        if bind is not None:
            bind.dispose()
        self.engine.dispose()
        for engine in self._tenant_engines.values():
            engine.dispose()


def open_platform(settings: Settings | None = None, *, run_migrations: bool = True) -> Platform:
    settings = settings or get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = resolve_database_url(settings)
    check_server_version(url)
    if run_migrations:
        migrate.upgrade(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    keystore = Keystore(make_key_provider(settings))
    with sessions() as session:
        audit_service.ensure_keys(session, keystore)
        session.commit()
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        ensure_partitions(conn, dt.date.today())
    sequencer = Client(settings.audit_sequencer) if settings.audit_sequencer else None
    log = AuditLog(lambda: psycopg.connect(libpq_url(url)), sequencer=sequencer)
    # The audit's own small pool: requests waiting for their event to commit hold the main
    # pool's connections, so the audit must never need one of those to make progress.
    audit_sessions = make_sessionmaker(make_engine(url, pool_size=2))
    auditor = audit_service.Auditor(log, keystore, audit_sessions, settings.audit_log_origin)
    log.on_batch(_periodic_checkpoints(audit_sessions, keystore, settings, url))
    return Platform(settings, url, engine, sessions, keystore, auditor)


def _periodic_checkpoints(
    sessions: sessionmaker[Session], keystore: Keystore, settings: Settings, url: str
) -> Callable[[Head], None]:
    """After a batch, sign the tree if the last signature is older than the configured period."""
    last = [time.monotonic()]

    def maybe_sign(_: Head) -> None:
        if time.monotonic() - last[0] < settings.audit_checkpoint_seconds:
            return
        last[0] = time.monotonic()
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:  # a new month's partition, ahead of time
            ensure_partitions(conn, dt.date.today())
        with sessions() as session:
            audit_service.make_checkpoint(session, keystore, settings.audit_log_origin)

    return maybe_sign


def sequencer_socket(settings: Settings) -> Path:
    """Where `rempart serve` puts the audit sequencer's socket: in the data folder, or in a
    private temporary folder when that path is too long for a Unix socket (108 bytes)."""
    path = (settings.data_dir / "run" / "audit.sock").resolve()
    if len(str(path)) < 100:
        return path
    return Path(tempfile.mkdtemp(prefix="rempart-")) / "audit.sock"


def serve_audit_sequencer(
    settings: Settings, path: Path, *, started: Callable[[Sequencer], None] | None = None
) -> None:
    """Run the audit sequencer (until interrupted, or `stop` on what `started` is given):
    the reads of every server process given `path` as REMPART_AUDIT_SEQUENCER are committed
    here, with the staged writes and the periodic checkpoints."""
    platform = open_platform(settings.model_copy(update={"audit_sequencer": None}), run_migrations=False)
    try:
        sequencer = Sequencer(path, platform.audit.log.batch_writer())
        if started is not None:
            started(sequencer)
        sequencer.serve()
    finally:
        platform.close()


def end_with_parent(parent: int) -> None:
    """In a child of `rempart serve`: a thread that ends this process (SIGTERM) once the process
    that started it is gone, even killed; an orphan would hold the port or the database."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def run_audit_sequencer_process(path: str, parent: int) -> None:
    """A `multiprocessing` target: the sequencer with the environment's settings. Deaf to
    SIGINT: Ctrl-C in a terminal reaches every process of the group at once, and the workers'
    last requests need the sequencer to answer them; `rempart serve` stops it last (SIGTERM)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    end_with_parent(parent)
    with contextlib.suppress(KeyboardInterrupt):
        serve_audit_sequencer(get_settings(), Path(path))


class SequencerProcess:
    """The audit sequencer as `rempart serve --workers` runs it: a process of its own, started
    again if it dies (meanwhile the workers' reads fail closed: 503, nothing returned)."""

    RESTART_PAUSE_SECONDS = 1.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self.restarts = 0
        self._context = multiprocessing.get_context("spawn")
        self._process: multiprocessing.process.BaseProcess | None = None
        self._stopping = threading.Event()
        self._watch: threading.Thread | None = None

    def start(self, timeout: float = 60.0) -> bool:
        """Start it and its watchdog; True once it listens. False, touching nothing, when a
        sequencer already listens on the path (another server's: its socket is not ours to unlink)."""
        if _listening(self.path) or not self._launch(timeout):
            return False
        self._watch = threading.Thread(target=self._watchdog, name="audit-sequencer-watchdog", daemon=True)
        self._watch.start()
        return True

    def stop(self) -> None:
        self._stopping.set()
        if self._process is not None:
            self._process.terminate()
            self._process.join(timeout=10)
        if self._watch is not None:
            self._watch.join(timeout=10)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def _launch(self, timeout: float) -> bool:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        process = self._context.Process(
            target=run_audit_sequencer_process,
            args=(str(self.path), os.getpid()),
            name="rempart-audit-sequencer",
            daemon=True,
        )
        process.start()
        self._process = process
        deadline = time.monotonic() + timeout
        while not _listening(self.path):
            if not process.is_alive() or time.monotonic() > deadline or self._stopping.is_set():
                return False
            time.sleep(0.05)
        return True

    def _watchdog(self) -> None:
        while not self._stopping.is_set():
            process = self._process
            if process is not None:
                process.join(timeout=0.5)
                if process.is_alive() or self._stopping.is_set():
                    continue
            _log.warning("the audit sequencer stopped (exit code %s): starting it again",
                         None if process is None else process.exitcode)  # fmt: skip
            self.restarts += 1
            if not self._launch(60.0):
                self._stopping.wait(self.RESTART_PAUSE_SECONDS)


def _listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True
