"""Statements of the hottest path (every API call, every rights check), sent straight to the
session's own psycopg connection, inside the session's transaction.

Why: SQLAlchemy's execution path (building the statement, its cache key, the result's
processing) costs ~150 µs of Python per statement, more than the statement itself; a rights
check runs ten. psycopg prepares a statement on the server after a few runs on a connection,
so these cost one round trip and little Python. The SQL is written out here in full, with
`%s` placeholders; the session commits or rolls it back with the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, LiteralString, cast

import psycopg
from sqlalchemy.orm import Session

Params = Sequence[Any] | Mapping[str, Any]  # %s placeholders take a sequence, %(name)s ones a mapping


def driver(session: Session) -> psycopg.Connection[Any]:
    """The session's psycopg connection, its transaction begun."""
    return cast(psycopg.Connection[Any], session.connection().connection.driver_connection)


def fetch_one(session: Session, sql: LiteralString, params: Params = ()) -> tuple[Any, ...] | None:
    return driver(session).execute(sql, params).fetchone()


def fetch_all(session: Session, sql: LiteralString, params: Params = ()) -> list[tuple[Any, ...]]:
    return driver(session).execute(sql, params).fetchall()


def run(session: Session, sql: LiteralString, params: Params = ()) -> None:
    driver(session).execute(sql, params)
