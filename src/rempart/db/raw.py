"""Statements of the hottest path (every API call, every rights check), sent straight to the
session's own psycopg connection, inside the session's transaction.

Why: SQLAlchemy's execution path (building the statement, its cache key, the result's
processing) costs ~150 µs of Python per statement, more than the statement itself; a rights
check runs ten. psycopg prepares a statement on the server after a few runs on a connection,
so these cost one round trip and little Python. The SQL is written out here in full, with
`%s` placeholders; the session commits or rolls it back with the rest (in an autocommit
session, `Platform.session(autocommit=True)`, each commits as it runs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, LiteralString, cast

import psycopg
from sqlalchemy.orm import Session

Params = Sequence[Any] | Mapping[str, Any]  # %s placeholders take a sequence, %(name)s ones a mapping


_DRIVER = "rempart.raw.driver"


def driver(session: Session) -> psycopg.Connection[Any]:
    """The session's psycopg connection, its transaction begun. Kept on the session for as long
    as that SQLAlchemy transaction lasts (asking SQLAlchemy again costs ~40 µs a statement):
    once it ends, the connection is back in the pool and may be another request's."""
    transaction = session.get_transaction()
    kept = session.info.get(_DRIVER)
    if kept is not None and transaction is not None and kept[0] is transaction:
        return cast(psycopg.Connection[Any], kept[1])
    connection = session.connection().connection.driver_connection
    session.info[_DRIVER] = (session.get_transaction(), connection)
    return cast(psycopg.Connection[Any], connection)


def commit(session: Session) -> None:
    """Commit the session's transaction through its psycopg connection (what the ORM has
    pending is flushed first). SQLAlchemy's own commit costs ~150 µs of Python more, and
    hands the connection back to the pool to check it out again at the next statement; here
    the session keeps it, and psycopg begins the next transaction at the next statement (the
    session's later commit or rollback applies to that one only). SQLAlchemy still counts
    what came before as its open transaction: a later `session.rollback()` expires the
    objects it holds and expunges those added before this commit, though they are stored."""
    if session.in_nested_transaction():
        raise RuntimeError("a savepoint is open: commit it through the session")
    session.flush()
    driver(session).commit()


def fetch_one(session: Session, sql: LiteralString, params: Params = ()) -> tuple[Any, ...] | None:
    return driver(session).execute(sql, params).fetchone()


def fetch_all(session: Session, sql: LiteralString, params: Params = ()) -> list[tuple[Any, ...]]:
    return driver(session).execute(sql, params).fetchall()


def run(session: Session, sql: LiteralString, params: Params = ()) -> None:
    driver(session).execute(sql, params)
