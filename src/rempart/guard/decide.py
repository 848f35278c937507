"""The guard's decision before a care service looks anyone up.

Every use case that fetches a person's data on a professional's request calls `admit` first,
before any lookup: this is the one place where the guard decides (quotas today; behaviour
signals and containment join here later). Refusals are answered 429 with Retry-After.

Quotas, per professional (whichever door, portal or practice software):
* rights checks: RIGHTS_CHECKS a day — a busy pharmacy makes a few hundred;
* identifications that found nobody: RIGHTS_MISSES an hour — people mistype, but trying
  identities one after the other (enumeration) is mostly misses, and stops here.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy.orm import Session

from rempart.guard import ratelimit
from rempart.guard.ratelimit import Limit

RIGHTS_CHECKS = Limit("rights-checks", 3_000, dt.timedelta(days=1))
RIGHTS_MISSES = Limit("rights-misses", 60, dt.timedelta(hours=1))


def admit(session: Session, *, professional_id: uuid.UUID) -> tuple[str, dt.datetime]:
    """Count the attempt and refuse it when a quota is spent (committed at once: a refused or
    failed attempt still counts).

    Every admitted check takes one of the hour's misses before it looks anyone up, and gives it
    back once it has found someone: so checks in flight together cannot overshoot the misses
    (counted after the lookup, a burst of them could), and a check that fails half-way counts
    as a miss. Returns the misses counter (key, window start) to give back."""
    subject = f"professional:{professional_id}"
    taken = ratelimit.hit_all(session, [(RIGHTS_CHECKS, subject)], reserve=(RIGHTS_MISSES, subject))
    assert taken is not None
    return taken
