"""Quotas in one statement: counted limits refuse past their count (and keep counting); a
reserved limit gives one unit to each request while one is left, exactly, however many come
at once, and refuses once spent, and then nothing is counted.

ASVS 5.0 V2.4 (anti-automation): per-subject limits, enforced server-side."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import text

from rempart.guard import ratelimit
from rempart.guard.ratelimit import Limit, RateLimited
from rempart.platform import Platform

pytestmark = pytest.mark.integration

CHECKS = Limit("test-checks", 2, dt.timedelta(days=1))
MISSES = Limit("test-misses", 1, dt.timedelta(hours=1))


def hits(platform: Platform, limit: Limit, subject: str, now: dt.datetime) -> int:
    key, start = ratelimit.window(limit, subject, now)
    with platform.session() as session:
        found = session.execute(
            text("SELECT hits FROM rate_counters WHERE key = :key AND window_start = :start"),
            {"key": key, "start": start},
        ).scalar_one_or_none()
    return int(found or 0)


def test_counted_and_reserved_limits(platform: Platform) -> None:
    now = dt.datetime.now(dt.UTC)
    plenty = Limit("test-plenty", 10, dt.timedelta(hours=1))
    with platform.session() as session:
        for _ in range(2):
            ratelimit.hit_all(session, [(CHECKS, "p1")], reserve=(plenty, "p1"), now=now)
        with pytest.raises(RateLimited):  # the third check of the day
            ratelimit.hit_all(session, [(CHECKS, "p1")], reserve=(plenty, "p1"), now=now)
        assert hits(platform, CHECKS, "p1", now) == 3  # a refused request still counts
        assert hits(platform, plenty, "p1", now) == 2  # each admitted one took one; the refused gave its back

        ratelimit.count(session, MISSES, "p2", now=now)
        session.commit()
        with pytest.raises(RateLimited):  # the hour's misses are spent: refused, counted nowhere
            ratelimit.hit_all(session, [(CHECKS, "p2")], reserve=(MISSES, "p2"), now=now)
        assert hits(platform, CHECKS, "p2", now) == 0 and hits(platform, MISSES, "p2", now) == 1

        with pytest.raises(RateLimited):  # a reserved limit of nothing refuses before any row exists
            ratelimit.hit_all(session, [(CHECKS, "p3")], reserve=(Limit("none", 0, MISSES.window), "p3"), now=now)
        assert hits(platform, CHECKS, "p3", now) == 0

        with pytest.raises(ValueError):
            ratelimit.hit_all(session, [(CHECKS, "p4")], reserve=(CHECKS, "p4"), now=now)


def test_a_reserved_limit_is_exact_for_requests_in_flight_together(platform: Platform) -> None:
    """The row is locked and compared as it increments: a second request whose transaction is
    open at the same time waits for the first and sees its unit taken."""
    now = dt.datetime.now(dt.UTC)
    few = Limit("test-few", 3, dt.timedelta(hours=1))
    calls = [(Limit("test-calls", 100, dt.timedelta(hours=1)), "p5")]
    with platform.session() as first, platform.session() as second:
        ratelimit.hit_all(first, calls, reserve=(few, "p5"), now=now, commit=False)
        ratelimit.hit_all(first, calls, reserve=(few, "p5"), now=now, commit=False)
        results: list[str] = []

        def other() -> None:
            try:
                ratelimit.hit_all(second, calls, reserve=(few, "p5"), now=now)
                results.append("taken")
            except RateLimited:
                results.append("refused")

        waiting = threading.Thread(target=other)
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive()  # held on the row the first transaction holds
        first.commit()
        waiting.join(10)
        assert results == ["taken"]  # the third of three
        with pytest.raises(RateLimited):
            ratelimit.hit_all(first, calls, reserve=(few, "p5"), now=now)
    assert hits(platform, few, "p5", now) == 3
