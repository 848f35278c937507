"""The hot path's statements and commits straight through the session's psycopg connection
(db/raw.py): a raw commit keeps what came before it, the session's own rollback undoes only
what came after, and what the ORM had pending is committed with it."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from rempart.db import raw
from rempart.guard.models import RateCounter
from rempart.platform import Platform

pytestmark = pytest.mark.integration

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
INSERT = "INSERT INTO rate_counters (key, window_start, hits) VALUES (%s, %s, 1)"


def kept(platform: Platform) -> set[str]:
    with platform.session() as session:
        return set(session.scalars(select(RateCounter.key).where(RateCounter.key.like("raw-test:%"))))


def test_a_raw_commit_keeps_what_came_before_and_a_rollback_undoes_only_what_came_after(platform: Platform) -> None:
    with platform.session() as session:
        raw.run(session, INSERT, ("raw-test:first", START))
        session.add(RateCounter(key="raw-test:orm", window_start=START, hits=1))  # pending in the ORM
        raw.commit(session)
        raw.run(session, INSERT, ("raw-test:second", START))
        session.rollback()
        raw.run(session, INSERT, ("raw-test:third", START))  # the session goes on, a new transaction
        session.commit()
    assert kept(platform) == {"raw-test:first", "raw-test:orm", "raw-test:third"}


def test_a_raw_commit_refuses_to_run_inside_a_savepoint(platform: Platform) -> None:
    with platform.session() as session:
        raw.run(session, INSERT, ("raw-test:outer", START))
        with session.begin_nested(), pytest.raises(RuntimeError, match="savepoint"):
            raw.commit(session)
        session.rollback()
    assert kept(platform) == set()


def test_after_the_session_commits_raw_statements_follow_it_to_its_next_connection(platform: Platform) -> None:
    """The session gives its connection back to the pool when it commits: the psycopg connection
    kept for raw statements must not outlive that (it may be another request's by then)."""
    with platform.session() as session, platform.session() as other:
        raw.run(session, INSERT, ("raw-test:before", START))
        first = raw.driver(session)
        session.commit()  # its connection back in the pool, where the other session takes it
        raw.run(other, INSERT, ("raw-test:other's", START))
        assert raw.driver(other) is first
        session.scalars(select(RateCounter.key).limit(1)).all()  # a new transaction, on another connection
        assert raw.driver(session) is session.connection().connection.driver_connection is not first
        raw.run(session, INSERT, ("raw-test:after", START))
        raw.commit(session)
        other.rollback()
    assert kept(platform) == {"raw-test:before", "raw-test:after"}


def test_an_autocommit_session_keeps_each_statement_and_gives_back_a_transactional_connection(
    platform: Platform,
) -> None:
    """A rights check's session commits statement by statement; its connection must come back
    to the pool in transactions again, or the next use case (an invoice) would lose its atomicity."""
    with platform.session(autocommit=True) as session:
        raw.run(session, INSERT, ("raw-test:autocommitted", START))
        connection = raw.driver(session)
        assert connection.autocommit
        session.rollback()  # nothing to undo: the statement committed as it ran
    assert not connection.autocommit
    assert kept(platform) == {"raw-test:autocommitted"}
    with platform.session() as session:
        raw.run(session, INSERT, ("raw-test:rolled back", START))
        assert not raw.driver(session).autocommit
        session.rollback()
    assert kept(platform) == {"raw-test:autocommitted"}
