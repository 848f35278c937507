"""Fixed-window rate limits answered before any work is done (429 with Retry-After).

Counters live in PostgreSQL, so all workers of the platform share them, and the check fails
closed: if the counter cannot be written, the request is refused. Network addresses are
kept only as a keyed hash that changes every window."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from rempart.db import raw


@dataclass(frozen=True)
class Limit:
    name: str
    hits: int
    window: dt.timedelta


LOGIN = Limit("login", 30, dt.timedelta(minutes=1))
ENROL = Limit("enrol", 10, dt.timedelta(minutes=10))
RECOVERY = Limit("recovery", 5, dt.timedelta(hours=1))
# Sensitive account actions (invitations, API clients, IBAN changes, break-glass, recovery
# codes), counted per account. An account recovered with a recovery code gets a tenth of it
# for a day: whoever stole a code cannot use the account to fan out.
SENSITIVE = Limit("sensitive", 20, dt.timedelta(hours=1))
REDUCED_SHARE = 10
# API calls of practice software, counted per client and per professional it acts for: one
# stolen client key, or one professional named by many clients, hits a ceiling either way.
API_CLIENT = Limit("api-client", 600, dt.timedelta(minutes=1))
API_PROFESSIONAL = Limit("api-professional", 300, dt.timedelta(minutes=1))


class RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__("too many requests")
        self.retry_after = retry_after


def hit(session: Session, limit: Limit, subject: str, *, now: dt.datetime | None = None, commit: bool = True) -> None:
    """Count one request of `subject` (e.g. a client address) against `limit`; raise when over.

    With `commit=False` the count joins the caller's transaction (an action refused later in
    it is not counted)."""
    hit_all(session, [(limit, subject)], now=now, commit=commit)


def hit_all(
    session: Session,
    counts: list[tuple[Limit, str]],
    *,
    reserve: tuple[Limit, str] | None = None,
    now: dt.datetime | None = None,
    commit: bool = True,
) -> tuple[str, dt.datetime] | None:
    """Count one request against several limits in one statement; raise for the first spent
    (every count is kept: a refused request still counts).

    With `reserve`, a limit the request takes one of only while one is left, the counter's
    row locked and compared as it increments, so that requests in flight together cannot
    take more than there is; when none is left the request is refused and, as if it had not
    come, counted nowhere; refused by a counted limit, it gives the unit back. Returns that
    counter's (key, window start): the caller gives the unit back when the request turns out
    not to use it (care.eligibility.RECORD_CHECK)."""
    now = now or dt.datetime.now(dt.UTC)
    windows = [(window(limit, subject, now), limit) for limit, subject in counts]
    reserved = None if reserve is None else window(reserve[0], reserve[1], now)
    if reserved is not None and reserved[0] in {key for (key, _), _ in windows}:
        raise ValueError("a limit is either counted or reserved, not both")
    params = _window_params(windows)
    rows_in = "VALUES " + ", ".join(f"(%(k{i})s, CAST(%(s{i})s AS timestamptz), 1)" for i in range(len(windows)))
    taken = ""
    if reserve is not None and reserved is not None:
        if reserve[0].hits <= 0:  # none to take, before any row exists
            raise _refused(reserve[0], reserved[1], now)
        params["r"], params["rs"], params["rl"] = reserved[0], reserved[1], reserve[0].hits
        taken = (
            "taken AS (INSERT INTO rate_counters (key, window_start, hits) VALUES (%(r)s, %(rs)s, 1)"
            " ON CONFLICT (key, window_start) DO UPDATE SET hits = rate_counters.hits + 1"
            " WHERE rate_counters.hits < %(rl)s RETURNING key, hits), "
        )
        rows_in = f"SELECT * FROM ({rows_in}) AS v WHERE EXISTS (SELECT 1 FROM taken)"
    statement = (
        f"WITH {taken}counted AS (INSERT INTO rate_counters (key, window_start, hits) {rows_in}{COUNTED})"
        " SELECT key, hits FROM counted" + (" UNION ALL SELECT key, hits FROM taken" if taken else "")
    )
    hits: dict[str, int] = {key: int(count) for key, count in raw.fetch_all(session, statement, params)}
    spent = _first_spent(windows, hits)
    if spent is not None and reserved is not None and reserved[0] in hits:
        # Refused by a counted limit: the reserved unit it took goes back (else, once the day's
        # checks are spent, every retry would also spend one of the hour's misses).
        raw.run(session, GIVE_BACK, reserved)
    sweep_now_and_then(session, now)
    if commit:
        raw.commit(session)
    if reserve is not None and reserved is not None and reserved[0] not in hits:  # none was left
        raise _refused(reserve[0], reserved[1], now)
    if spent is not None:
        raise _refused(spent[0], spent[1], now)
    return reserved


GIVE_BACK = "UPDATE rate_counters SET hits = hits - 1 WHERE key = %s AND window_start = %s AND hits > 0"

Windows = Sequence[tuple[tuple[str, dt.datetime], Limit]]  # each counter's (key, window start), and its limit


def _window_params(windows: Windows) -> dict[str, object]:
    """The counters' keys and window starts as the statements' parameters k0, s0, k1, s1, ..."""
    params: dict[str, object] = {}
    for i, ((key, start), _) in enumerate(windows):
        params[f"k{i}"], params[f"s{i}"] = key, start
    return params


def _first_spent(windows: Windows, hits: dict[str, int]) -> tuple[Limit, dt.datetime] | None:
    return next(((limit, start) for (key, start), limit in windows if hits.get(key, 0) > limit.hits), None)


# Counting folded into a statement of the caller's (one round trip for both): the caller's
# statement writes COUNT_TWO_WHERE, its condition, COUNTED (so that a request counts only once
# it is known to be genuine) with the parameters of `Counting.params`, returns the counters'
# keys and hits, and hands them to `refuse_if_spent`.
COUNT_TWO_WHERE = (
    "INSERT INTO rate_counters (key, window_start, hits)"
    " SELECT * FROM (VALUES (%(k0)s, CAST(%(s0)s AS timestamptz), 1), (%(k1)s, CAST(%(s1)s AS timestamptz), 1)) AS v"
    " WHERE "
)
COUNTED = " ON CONFLICT (key, window_start) DO UPDATE SET hits = rate_counters.hits + 1 RETURNING key, hits"


@dataclass(frozen=True)
class Counting:
    """One request's counts against two limits, written by the caller's statement
    (COUNT_TWO_WHERE ... COUNTED)."""

    windows: tuple[tuple[tuple[str, dt.datetime], Limit], tuple[tuple[str, dt.datetime], Limit]]
    now: dt.datetime

    @property
    def params(self) -> dict[str, object]:
        return _window_params(self.windows)


def counting(first: tuple[Limit, str], second: tuple[Limit, str], *, now: dt.datetime | None = None) -> Counting:
    now = now or dt.datetime.now(dt.UTC)
    windows = ((window(first[0], first[1], now), first[0]), (window(second[0], second[1], now), second[0]))
    if windows[0][0][0] == windows[1][0][0]:
        raise ValueError("two different counters")
    return Counting(windows, now)


def refuse_if_spent(counts: Counting, keys: list[str], hits: list[int]) -> None:
    """After the caller's statement has counted (and committed): raise for the first limit spent."""
    spent = _first_spent(counts.windows, dict(zip(keys, hits, strict=True)))
    if spent is not None:
        raise _refused(spent[0], spent[1], counts.now)


def sweep_now_and_then(session: Session, now: dt.datetime) -> None:
    """Old windows go, now and then rather than on every request."""
    if secrets.randbelow(SWEEP_ONE_IN) == 0:
        raw.run(session, "DELETE FROM rate_counters WHERE window_start < %s", (now - dt.timedelta(days=1),))


SWEEP_ONE_IN = 500


def _refused(limit: Limit, start: dt.datetime, now: dt.datetime) -> RateLimited:
    """The refusal, with the seconds until the window that was spent ends (Retry-After)."""
    return RateLimited(max(1, int((start + limit.window - now).total_seconds())))


def window(limit: Limit, subject: str, now: dt.datetime) -> tuple[str, dt.datetime]:
    """The counter's key (subject hashed with the window) and the window's start."""
    seconds = int(limit.window.total_seconds())
    start = dt.datetime.fromtimestamp(int(now.timestamp()) // seconds * seconds, dt.UTC)
    digest = hashlib.sha256(f"{limit.name}|{start.isoformat()}|{subject}".encode()).hexdigest()[:40]
    return f"{limit.name}:{digest}", start


def count(session: Session, limit: Limit, subject: str, *, now: dt.datetime | None = None) -> None:
    """Count one event of `subject` in the caller's transaction, never refusing (the refusal
    comes from `hit_all(..., reserve=...)` at the next attempt)."""
    now = now or dt.datetime.now(dt.UTC)
    key, start = window(limit, subject, now)
    raw.run(
        session,
        "INSERT INTO rate_counters (key, window_start, hits) VALUES (%s, %s, 1)"
        " ON CONFLICT (key, window_start) DO UPDATE SET hits = rate_counters.hits + 1",
        (key, start),
    )


def hit_account(
    session: Session,
    limit: Limit,
    account_id: uuid.UUID,
    *,
    reduced_until: dt.datetime | None,
    now: dt.datetime | None = None,
) -> None:
    """Count one action of an account, in the caller's transaction; an account under reduced
    limits (after a recovery code) gets `1/REDUCED_SHARE` of the allowance."""
    now = now or dt.datetime.now(dt.UTC)
    if reduced_until is not None and reduced_until > now:
        limit = Limit(limit.name, max(1, limit.hits // REDUCED_SHARE), limit.window)
    hit(session, limit, f"account:{account_id}", now=now, commit=False)
