"""Shared fixtures: a real PostgreSQL (embedded by default, or REMPART_TEST_DATABASE_URL),
a migrated template database, and one fresh database plus keyring per test."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from rempart.db import migrate
from rempart.db.server import libpq_url, sqlalchemy_url, start_embedded
from rempart.platform import Platform, open_platform
from rempart.settings import Settings

TEMPLATE = f"rempart_template_{os.getpid()}"


def _with_database(url: str, name: str) -> str:
    """Same server, another database name."""
    base, _, query = url.partition("?")
    prefix = base.rsplit("/", 1)[0]
    return f"{prefix}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of a maintenance database on the test server."""
    configured = os.environ.get("REMPART_TEST_DATABASE_URL")
    if configured:
        yield sqlalchemy_url(configured)
        return
    folder = Path(tempfile.mkdtemp(prefix="rempart-test-pg-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # after the server's own cleanup (LIFO)
    yield start_embedded(folder / "pg", delete_on_exit=True)


@pytest.fixture(scope="session")
def template_url(server_url: str) -> Iterator[str]:
    admin = libpq_url(server_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(TEMPLATE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    url = _with_database(server_url, TEMPLATE)
    migrate.upgrade(url)
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE)))


@contextmanager
def _copy_of_template(server_url: str) -> Iterator[str]:
    name = f"rempart_t_{uuid.uuid4().hex[:12]}"
    admin = libpq_url(server_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(TEMPLATE)))
    url = _with_database(server_url, name)
    yield url
    with psycopg.connect(libpq_url(url)) as conn:  # tenant roles are server-wide: drop this test's own
        roles = [r for (r,) in conn.execute("SELECT role_name FROM tenant_roles").fetchall()]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        for role in roles:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def database_url(server_url: str, template_url: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    with _copy_of_template(server_url) as url:
        yield url


@pytest.fixture(scope="module")
def module_database_url(server_url: str, template_url: str) -> Iterator[str]:
    """A fresh, migrated database shared by one module's tests (a long fuzzing run)."""
    with _copy_of_template(server_url) as url:
        yield url


@pytest.fixture
def scratch_database(server_url: str) -> Iterator[Callable[[], str]]:
    """Makes empty databases on the test server (for restores), dropped after the test."""
    admin = libpq_url(server_url)
    made: list[str] = []

    def make() -> str:
        name = f"rempart_scratch_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        made.append(name)
        return _with_database(server_url, name)

    yield make
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def make_settings(database_url: str, data_dir: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=data_dir,
        keyring_path=data_dir / "keys" / "keyring.json",
        import_workers=1,
        import_chunk_rows=200,
    )


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "data")


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    p = open_platform(settings)
    yield p
    p.close()


@pytest.fixture
def portal_client(settings: Settings) -> Iterator[tuple[Platform, httpx.Client]]:
    """The platform served on loopback, and an HTTP client that sends the portal's Origin."""
    from rempart.api.app import create_app

    from portal_server import free_port, serve

    port = free_port()
    origin = f"http://localhost:{port}"
    platform = open_platform(settings.model_copy(update={"public_origin": origin}))
    with (
        serve(create_app(platform), port),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"origin": origin}) as client,
    ):
        yield platform, client
    platform.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's chromium driven by Playwright (its own browser download is not used)."""
    from playwright.sync_api import sync_playwright

    from portal_server import BROWSER_ARGS

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path="/usr/bin/chromium", args=BROWSER_ARGS)
        yield launched
        launched.close()
