"""What a rights check tells a professional about a guarantee (pure): for one care domain on
one date, the rules that apply and what is left of each budget and ceiling."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from rempart.coverage.compute import ZERO, Consumed, period_around, used_in_period
from rempart.coverage.schedule import Schedule

# Domains where the insurer's prior agreement is asked for before care (quotes): optics,
# dentistry, hearing aids, hospital stays.
AGREEMENT_DOMAINS = frozenset({"optical", "dental", "dental_implant", "orthodontics", "audio", "hospital"})


@dataclass(frozen=True, slots=True)
class Level:
    """One rule of the domain, as the schedule writes it (the first that matches a line applies)."""

    kind: str
    percent: Decimal | None = None
    amount: Decimal | None = None
    per: str | None = None
    acts: tuple[str, ...] | None = None
    amo_rates: tuple[int, ...] | None = None
    basket: str | None = None
    plus_flat: Decimal | None = None
    remaining: Decimal | None = None  # a period flat: what is left of it on the date


@dataclass(frozen=True, slots=True)
class Remaining:
    """A ceiling of the domain: its amount, what was used in the period, what is left."""

    amount: Decimal
    per: str
    acts: tuple[str, ...] | None
    period_start: dt.date
    period_end: dt.date
    used: Decimal
    remaining: Decimal


@dataclass(frozen=True, slots=True)
class DomainSummary:
    domain: str
    covered: bool
    levels: tuple[Level, ...]
    ceilings: tuple[Remaining, ...]
    prior_agreement_required: bool


def summarize(schedule: Schedule, domain: str, day: dt.date, consumption: Sequence[Consumed]) -> DomainSummary:
    levels = []
    for rule in schedule.rules:
        if rule.domain != domain:
            continue
        remaining = None
        if rule.kind == "flat" and rule.per not in (None, "act") and rule.amount is not None:
            remaining = max(ZERO, rule.amount - used_in_period(consumption, domain, rule.acts, rule.per, day))
        levels.append(
            Level(
                rule.kind,
                None if rule.percent is None else Decimal(rule.percent),
                rule.amount,
                rule.per,
                rule.acts,
                rule.amo_rates,
                rule.basket,
                rule.plus_flat,
                remaining,
            )
        )
    ceilings = []
    for ceiling in schedule.ceilings:
        if ceiling.domain != domain:
            continue
        used = used_in_period(consumption, domain, ceiling.acts, ceiling.per, day)
        start, end = period_around(ceiling.per, day)
        ceilings.append(
            Remaining(ceiling.amount, ceiling.per, ceiling.acts, start, end, used, max(ZERO, ceiling.amount - used))
        )
    return DomainSummary(domain, bool(levels), tuple(levels), tuple(ceilings), domain in AGREEMENT_DOMAINS)
