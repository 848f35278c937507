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


def admit(session: Session, *, professional_id: uuid.UUID) -> None:
    """Count the attempt and refuse it when a quota is spent (committed at once: a refused or
    failed attempt still counts)."""
    subject = f"professional:{professional_id}"
    ratelimit.hit_all(session, [(RIGHTS_CHECKS, subject)], unless_spent=[(RIGHTS_MISSES, subject)])


def miss_counter(professional_id: uuid.UUID) -> tuple[str, dt.datetime]:
    """The counter (key, window start) an identification that found nobody adds one to. The
    rights check's record adds it in the same statement, on a hit as well as a miss (it adds
    nothing on a hit), so that both send the same statements."""
    return ratelimit.window(RIGHTS_MISSES, f"professional:{professional_id}", dt.datetime.now(dt.UTC))
