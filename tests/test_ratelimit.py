"""Quotas in one statement: counted limits refuse past their count (and keep counting); limits
only watched refuse once spent, and then nothing is counted.

ASVS 5.0 V2.4 (anti-automation): per-subject limits, enforced server-side."""

from __future__ import annotations

import datetime as dt

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


def test_counted_and_watched_limits(platform: Platform) -> None:
    now = dt.datetime.now(dt.UTC)
    with platform.session() as session:
        for _ in range(2):
            ratelimit.hit_all(session, [(CHECKS, "p1")], unless_spent=[(MISSES, "p1")], now=now)
        with pytest.raises(RateLimited):  # the third check of the day
            ratelimit.hit_all(session, [(CHECKS, "p1")], unless_spent=[(MISSES, "p1")], now=now)
        assert hits(platform, CHECKS, "p1", now) == 3  # a refused request still counts

        ratelimit.count(session, MISSES, "p2", now=now)
        session.commit()
        with pytest.raises(RateLimited):  # the hour's misses are spent: refused, counted nowhere
            ratelimit.hit_all(session, [(CHECKS, "p2")], unless_spent=[(MISSES, "p2")], now=now)
        assert hits(platform, CHECKS, "p2", now) == 0

        with pytest.raises(RateLimited):  # a watched limit of nothing refuses before any row exists
            ratelimit.hit_all(
                session, [(CHECKS, "p3")], unless_spent=[(Limit("none", 0, MISSES.window), "p3")], now=now
            )
        assert hits(platform, CHECKS, "p3", now) == 0

        with pytest.raises(ValueError):
            ratelimit.hit_all(session, [(CHECKS, "p4")], unless_spent=[(CHECKS, "p4")], now=now)
