"""The running platform's shared parts: settings, database, key provider, keystore.

Every door (CLI, API, tests) opens one `Platform` and passes its parts to service functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from rempart.crypto.keystore import Keystore
from rempart.crypto.local import LocalKeyringProvider
from rempart.crypto.provider import KeyProvider
from rempart.db import migrate
from rempart.db.engine import make_engine, make_sessionmaker
from rempart.db.server import check_server_version, libpq_url, resolve_database_url
from rempart.settings import Settings, get_settings


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

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as session:
            yield session

    @contextmanager
    def raw_connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A dedicated psycopg connection, for COPY-heavy work in one transaction."""
        with psycopg.connect(libpq_url(self.url)) as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()


def open_platform(settings: Settings | None = None, *, run_migrations: bool = True) -> Platform:
    settings = settings or get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = resolve_database_url(settings)
    check_server_version(url)
    if run_migrations:
        migrate.upgrade(url)
    engine = make_engine(url)
    return Platform(settings, url, engine, make_sessionmaker(engine), Keystore(make_key_provider(settings)))
